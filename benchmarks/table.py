"""The markdown table of a `make bench` report (the README shows the CPU one)."""

from __future__ import annotations

from advflat.core.cpu_features import BF16_FLAGS

TRAINING_COLUMNS = [
    ("images/s advflat", "advflat_images_per_s", "{:.4g}"),
    ("images/s reference", "reference_images_per_s", "{:.4g}"),
    ("speedup", "speedup", "{:.2f}×"),
    ("useful TFLOP/s", "useful_tflops_per_s", "{:.3f}"),
    ("useful-FLOP utilisation", "useful_flop_utilisation", "{:.1%}"),
    ("attack step / training step", "attack_step_over_training_step", "{:.2f}"),
    ("peak memory (MiB)", "peak_memory_mb", "{:.0f}"),
]


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def precision(result: dict) -> str:
    """The row's precision, with a warning where bf16 was emulated (no bf16 units)."""
    return f"{result['precision']} (emulated)" if result["bf16_emulated"] else result["precision"]


def training_table(results: list[dict]) -> list[str]:
    header = [
        "PGD adversarial training, one epoch",
        "precision",
        *(title for title, _, _ in TRAINING_COLUMNS),
    ]
    lines = [_row(header), _row(["---"] * len(header))]
    for result in results:
        label = f"{result['name']} ({result['images']} images, PGD-{result['steps']})"
        cells = [_cell(result.get(key), fmt) for _, key, fmt in TRAINING_COLUMNS]
        lines.append(_row([label, precision(result), *cells]))
    return lines


def cpu_line(report: dict) -> str:
    cpu = report["cpu"]
    flags = ", ".join(f"{flag} {'yes' if cpu[flag] else 'no'}" for flag in BF16_FLAGS)
    native = "native" if report["bf16_native"] else "emulated (its rows time nothing real)"
    return (
        f"CPU: {cpu['model']} ({flags}; torch capability {cpu['torch_capability']}); "
        f"bf16 on the benchmarked device: {native}."
    )


def seconds_table(title: str, seconds: dict[str, float]) -> list[str]:
    lines = [_row([title, "seconds"]), _row(["---", "---"])]
    lines += [_row([f"`{key}`", f"{value:.2f}"]) for key, value in seconds.items()]
    return lines


def markdown(report: dict) -> str:
    """Training speed, AutoAttack and flatness timings of ``report`` as markdown."""
    peak = report["peak_flops"]
    peak_text = "no data-sheet peak" if peak is None else f"bf16 peak {peak / 1e12:.0f} TFLOP/s"
    lines = [
        f"Device: {report['device']}, torch {report['torch']} ({peak_text}); useful FLOPs are "
        "(2·steps + 3)·F per image, F the forward FLOPs.",
        "",
        cpu_line(report),
        "",
        *training_table(report["results"]),
        "",
    ]
    autoattack = dict(report["autoattack"])
    title = (
        f"AutoAttack standard, {autoattack.pop('model')}, {autoattack.pop('images'):.0f} images"
        f" (steps and queries ×{autoattack.pop('budget')}, robust error "
        f"{autoattack.pop('autoattack/robust_error'):.0%}): per 1000 images"
    )
    lines += seconds_table(title, autoattack)
    flatness = dict(report["flatness_seconds"])
    lines += ["", *seconds_table(
        f"Flatness, {flatness.pop('model')} ({flatness.pop('images')} images, "
        f"{flatness.pop('attempts')} attempt)",
        flatness,
    )]  # fmt: skip
    return "\n".join(lines) + "\n"
