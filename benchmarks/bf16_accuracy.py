"""Does bf16 autocast cost accuracy? The quickstart's PGD adversarial training on the bundled
digits, once with ``trainer.fast.autocast=true`` and once with ``false``, for a few seeds; the
clean and PGD-20×10 robust test error of each run, per seed and as mean ± std.

Run by hand (not part of ``make bench``): ``python -m benchmarks.bf16_accuracy [--epochs N]
[--seeds 0 1 2] [--out DIR]``. Each run is ``run_experiment`` on ``experiment=quickstart`` with
the evaluation cut to the clean and PGD metrics. The models are evaluated in fp32; only training
runs under autocast. On a CPU without bf16 units bf16 is emulated: the errors are what AMX or
CUDA would give, the time is not. ``--epochs`` below the quickstart's 30 scales its learning-rate
milestones by the same factor.

Writes <out>/<timestamp>.json and .md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from advflat.cli.paths import CONFIG_DIR, CONFIG_NAME
from advflat.core.io import save_json, save_text
from advflat.runs.pipeline import run_experiment
from benchmarks.run import device_name
from benchmarks.system import system_features

log = logging.getLogger("bench.bf16_accuracy")
QUICKSTART_EPOCHS = 30
QUICKSTART_MILESTONES = (20, 25)
METRICS = ("clean", "pgd")  # the evaluation metrics kept: clean and PGD-20×10 test error
ERRORS = {"clean": "test/clean_error", "robust": "test/robust_error/pgd"}
PRECISIONS = {"bf16": "true", "fp32": "false"}


def quickstart(seed: int, epochs: int, autocast: str, device: str) -> DictConfig:
    """The quickstart experiment at ``seed`` and ``epochs``, autocast forced on or off."""
    # Scaled milestones that round below epoch 1 or onto each other are dropped.
    milestones = sorted({m * epochs // QUICKSTART_EPOCHS for m in QUICKSTART_MILESTONES} - {0})
    overrides = [
        "experiment=quickstart",
        f"seed={seed}",
        f"device={device}",
        f"trainer.epochs={epochs}",
        f"trainer.scheduler.milestones=[{','.join(map(str, milestones))}]",
        f"trainer.fast.autocast={autocast}",
        "trainer.snapshot_every=0",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(CONFIG_NAME, overrides=overrides)
    with open_dict(cfg):
        cfg.evaluation.metrics = {name: cfg.evaluation.metrics[name] for name in METRICS}
    return cfg


def one_run(seed: int, epochs: int, autocast: str, device: str) -> dict[str, float]:
    cfg = quickstart(seed, epochs, autocast, device)
    with tempfile.TemporaryDirectory() as folder:
        metrics = run_experiment(cfg, Path(folder) / "run")
    row = {name: float(metrics[key]) for name, key in ERRORS.items()}
    row["training_seconds"] = float(metrics["cost/training"])
    return row


def summary(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and (sample) standard deviation of each error over the seeds."""
    out = {}
    for name in ERRORS:
        values = [row[name] for row in rows]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        out[name] = {"mean": statistics.fmean(values), "std": spread}
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"bf16 autocast vs fp32: quickstart PGD-AT on digits, {report['epochs']} epochs, "
        f"evaluated in fp32 (clean and PGD-20×10 test error, all 297 test digits).",
        f"Device: {report['device']}; bf16 {'native' if report['bf16_native'] else 'EMULATED'}.",
        "",
        "| precision | seed | clean error | robust error | training (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for precision, runs in report["runs"].items():
        for seed, row in zip(report["seeds"], runs, strict=True):
            lines.append(
                f"| {precision} | {seed} | {row['clean']:.2%} | {row['robust']:.2%} "
                f"| {row['training_seconds']:.0f} |"
            )
    for precision, stats in report["summary"].items():
        clean, robust = stats["clean"], stats["robust"]
        lines.append(
            f"| {precision} | mean ± std | {clean['mean']:.2%} ± {clean['std']:.2%} "
            f"| {robust['mean']:.2%} ± {robust['std']:.2%} | |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/bf16_accuracy"))
    parser.add_argument("--epochs", type=int, default=QUICKSTART_EPOCHS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    features = system_features(device)
    runs: dict[str, list[dict[str, float]]] = {precision: [] for precision in PRECISIONS}
    for seed in args.seeds:  # seed by seed: the log holds complete pairs if it is cut short
        for precision, autocast in PRECISIONS.items():
            row = one_run(seed, args.epochs, autocast, device.type)
            log.info("%s seed %d: %s", precision, seed, row)
            runs[precision].append(row)
    report = {
        "device": device_name(device),
        **features,
        "torch": torch.__version__,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "runs": runs,
        "summary": {precision: summary(rows) for precision, rows in runs.items()},
    }
    stem = args.out / time.strftime("%Y%m%d-%H%M%S")
    save_json(stem.with_suffix(".json"), report)
    save_text(stem.with_suffix(".md"), markdown(report))
    log.info("written %s.json and .md\n\n%s", stem, markdown(report))
    return stem.with_suffix(".json")


if __name__ == "__main__":
    main()
