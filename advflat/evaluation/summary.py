"""The short results table printed at the end of a run."""

from __future__ import annotations

# Shown first, in this order, when present; everything else follows alphabetically.
HEADLINE = (
    "test/clean_error",
    "test/robust_error/pgd",
    "test/robust_error/autoattack",
    "test/robust_loss/pgd",
    "train/robust_loss/pgd",
    "robust_generalization_gap/pgd",
    "flatness/average/robust",
    "flatness/worst/robust",
    "diagnostics/collapsed",
)


def summary_table(metrics: dict[str, float], limit: int = 24) -> str:
    """A two-column table of the headline metrics (errors shown as percentages)."""
    keys = [k for k in HEADLINE if k in metrics]
    rest = sorted(
        k
        for k in metrics
        if k not in keys and "/attempt_" not in k and not k.startswith("threat_model/")
    )
    rows = [(k, _format(k, metrics[k])) for k in (keys + rest)[:limit]]
    width = max(len(k) for k, _ in rows) if rows else 0
    lines = [f"  {'metric'.ljust(width)}  value", f"  {'-' * width}  -----"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    if metrics.get("diagnostics/collapsed"):
        lines.append(
            "  WARNING: training COLLAPSED (clean error at chance; without one, loss near ln K)"
        )
    return "\n".join(lines)


def _format(key: str, value: float) -> str:
    return f"{100 * value:.1f} %" if "_error" in key else f"{value:.4f}"
