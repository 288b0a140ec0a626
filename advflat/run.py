"""The advflat command: ``advflat [group=option ...] [key=value ...]`` (Hydra).

Composes conf/config.yaml, builds every object from its ``_target_`` and runs the experiment in
Hydra's output directory (Hydra never changes the working directory here). Returns the sweep
metric (``sweep_metric``), so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from advflat.errors import ConfigError
from advflat.pipeline import run_experiment

log = logging.getLogger("advflat")


# conf/ sits beside the package (editable install); an absolute path works from any cwd.
CONF = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(config_path=CONF, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = run_experiment(cfg, out_dir)
    except ConfigError as error:
        # A bad option is the user's to fix: one line, no traceback.
        log.error("%s", error)
        sys.exit(2)
    return float(metrics.get(cfg.sweep_metric, float("nan")))


if __name__ == "__main__":
    main()
