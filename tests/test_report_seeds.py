"""advflat-report on a study repeated over seeds (3 families × 3 seeds, as ``advflat -m
experiment=study/mini seed=0,1,2`` writes it, plus a family that collapses at every seed): the
mean ± std per family against hand-computed numbers, the correlations per seed and pooled against
numpy's, and a single-seed study left as it was."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from advflat.cli.report import main
from advflat.report.collect import Run
from advflat.report.families import Model, Setting
from advflat.report.seed_repeats import seed_order, several_seeds
from tests.test_report import EPSILON, entries, find, make_run, paper_metrics, read_table

FAMILIES = ("mini/at", "mini/trades", "mini/awp")
SEEDS = (0, 1, 2)
AVERAGE, WORST = "flatness/average/robust", "flatness/worst/robust"
TEST_LOSS, GAP = "test/robust_loss/pgd", "robust_generalization_gap/pgd"
# Per family, the values of seeds 0, 1, 2 (errors as fractions; gap = test − train loss).
VALUES = {
    "mini/at": {
        "test/clean_error": (0.20, 0.22, 0.24),
        "test/robust_error/pgd": (0.50, 0.52, 0.55),
        TEST_LOSS: (1.80, 1.70, 1.90),
        "train/robust_loss/pgd": (1.00, 0.90, 1.20),
        GAP: (0.80, 0.80, 0.70),
        AVERAGE: (0.60, 0.70, 0.65),
        WORST: (0.030, 0.034, 0.029),
    },
    "mini/trades": {
        "test/clean_error": (0.25, 0.26, 0.30),
        "test/robust_error/pgd": (0.48, 0.47, 0.49),
        TEST_LOSS: (1.50, 1.60, 1.40),
        "train/robust_loss/pgd": (1.20, 1.30, 1.00),
        GAP: (0.30, 0.30, 0.40),
        AVERAGE: (0.30, 0.25, 0.40),
        WORST: (0.020, 0.018, 0.025),
    },
    "mini/awp": {
        "test/clean_error": (0.30, 0.28, 0.29),
        "test/robust_error/pgd": (0.51, 0.53, 0.52),
        TEST_LOSS: (1.55, 1.35, 1.45),
        "train/robust_loss/pgd": (1.40, 1.10, 1.35),
        GAP: (0.15, 0.25, 0.10),
        AVERAGE: (0.10, 0.20, 0.15),
        WORST: (0.010, 0.012, 0.011),
    },
}
COLLAPSED = "mini/weight_decay_collapse"


def overrides(family: str, seed: int) -> list[str]:
    return [f"+family={family}", "experiment=study/mini", f"seed={seed}"]


def folder(family: str, seed: int) -> str:
    return f"+family={family.replace('/', '_')},experiment=study_mini,seed={seed}"


def run_metrics(family: str, seed: int) -> dict[str, float]:
    return {key: values[seed] for key, values in VALUES[family].items()} | {
        "evaluation/epsilon": EPSILON
    }


def column(key: str, seed: int | None = None) -> list[float]:
    """``key`` of every trained run (families in FAMILIES order), of one seed or of all."""
    seeds = SEEDS if seed is None else (seed,)
    return [VALUES[f][key][s] for s in seeds for f in FAMILIES]


def pearson(x: list[float], y: list[float]) -> float:
    return float(np.corrcoef(x, y)[0, 1])


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study's sweep folder with its report written once (figures take seconds)."""
    root = tmp_path_factory.mktemp("study_mini")
    for family in FAMILIES:
        for seed in SEEDS:
            make_run(root, folder(family, seed), overrides(family, seed), run_metrics(family, seed))
    for seed in SEEDS:  # far off the line: the correlations would change if it were in
        collapsed = paper_metrics(5.0, **{"diagnostics/collapsed": 1, TEST_LOSS: 0.0, GAP: 9.0})
        make_run(root, folder(COLLAPSED, seed), overrides(COLLAPSED, seed), collapsed)
    main([str(root)])
    return root / "report"


def test_table_shows_each_family_once_with_hand_computed_mean_and_sample_std_of_its_3_seeds(
    seeded,
):
    rows = {r["family"]: r for r in read_table(seeded)}
    assert sorted(rows) == sorted([*FAMILIES, COLLAPSED])
    assert {r["n_seeds"] for r in rows.values()} == {"3"}
    assert rows["mini/at"]["seeds"] == "0 1 2"
    # mini/trades' clean error 0.25, 0.26, 0.30: mean 0.27, squared deviations sum 14e-4 over n − 1.
    assert float(rows["mini/trades"]["test/clean_error"]) == pytest.approx(0.27)
    assert float(rows["mini/trades"]["test/clean_error std"]) == pytest.approx(math.sqrt(7e-4))
    # mini/trades' flatness 0.30, 0.25, 0.40: mean 0.95/3, squared deviations sum 0.07/6.
    assert float(rows["mini/trades"][AVERAGE]) == pytest.approx(0.95 / 3)
    assert float(rows["mini/trades"][f"{AVERAGE} std"]) == pytest.approx(math.sqrt(0.035 / 6))
    markdown = (seeded / "table.md").read_text()
    # mini/at: errors 22.0 ± 2.0 and 52.3 ± 2.5 %, test loss 1.8 ± 0.1, train loss 1.033 ± 0.153,
    # gap 0.767 ± 0.058, flatness 0.65 ± 0.05 and 0.031 ± 0.003 (all std with n − 1 = 2).
    assert (
        "| mini/at | 3 |  | 22.0 ± 2.0 | 52.3 ± 2.5 | 1.800 ± 0.100 | 1.033 ± 0.153 | "
        "0.767 ± 0.058 | 0.650 ± 0.050 | 0.031 ± 0.003 |"
    ) in markdown
    assert "| mini/awp | 3 |  | 29.0 ± 1.0 | 52.0 ± 1.0 | 1.450 ± 0.100 |" in markdown
    assert "sample standard deviation (n − 1)" in markdown
    assert sum(line.startswith("| mini/at |") for line in markdown.splitlines()) == 1 + 3


def test_runs_section_lists_every_run_with_its_own_seed_and_values(seeded):
    markdown = (seeded / "table.md").read_text()
    runs = markdown.split("## Runs (one row per seed)")[1].split("##")[0]
    lines = [line for line in runs.splitlines() if line.startswith("| mini/")]
    assert len(lines) == 12  # 3 trained families and the collapsed one, 3 seeds each
    assert "| mini/at | 1 |  | 22.0 | 52.0 | 1.700 | 0.900 | 0.800 | 0.700 | 0.034 |" in lines
    assert [line.split(" | ")[1] for line in lines if "mini/trades" in line] == ["0", "1", "2"]
    assert sum("diagnostics/collapsed = 1" in line for line in lines) == 3


def test_per_seed_pearson_equals_numpys_corrcoef_over_that_seeds_three_families(seeded):
    found = entries(seeded)
    for x in (AVERAGE, WORST):
        for y in (TEST_LOSS, GAP):
            entry = find(found, x, y)
            assert [s["seed"] for s in entry["per_seed"]] == ["0", "1", "2"]
            for seed, fit in zip(SEEDS, entry["per_seed"], strict=True):
                assert fit["n"] == 3
                assert fit["pearson"] == pytest.approx(pearson(column(x, seed), column(y, seed)))


def test_pooled_pearson_equals_numpys_corrcoef_over_all_nine_runs(seeded):
    found = entries(seeded)
    for x in (AVERAGE, WORST):
        for y in (TEST_LOSS, GAP):
            entry = find(found, x, y)
            assert entry["n"] == 9  # the 3 collapsed runs are left out
            assert entry["pearson"] == pytest.approx(pearson(column(x), column(y)))


def test_correlations_markdown_has_a_row_per_seed_and_a_pooled_row_with_the_same_numbers(seeded):
    text = (seeded / "correlations.md").read_text()
    entry = find(entries(seeded), AVERAGE, TEST_LOSS)
    section = text.split("### average-case robust flatness vs test robust loss (nats)")[1]
    rows = [line for line in section.split("###")[0].splitlines() if line.startswith("| ")]
    assert rows[0] == "| seed | n | Pearson r [95 % CI] | Spearman ρ [95 % CI] | p |"
    for seed, fit in zip(SEEDS, entry["per_seed"], strict=True):
        low, high = fit["pearson_ci"]
        assert rows[1 + seed].startswith(f"| {seed} | 3 | {fit['pearson']:.2f} [{low:.2f}, ")
        assert rows[1 + seed].endswith(f" | {fit['p_value']:.2g} |")
    assert rows[4].startswith(f"| pooled | 9 | {entry['pearson']:.2f} [")
    assert text.count(f"{COLLAPSED}, seed ") == 3  # listed as left out
    assert (seeded / "correlations" / entry["plot"]).stat().st_size > 10_000


def test_collapsed_runs_of_every_seed_are_listed_and_left_out_as_with_one_seed(seeded):
    notes = (seeded / "table.md").read_text()
    assert notes.count(f"collapsed, left out of the correlations: {COLLAPSED}, seed ") == 3
    for entry in entries(seeded):
        assert [s["n"] for s in entry["per_seed"]] == [3, 3, 3]


def test_a_single_seed_study_writes_no_per_seed_file_section_or_entry(tmp_path):
    for i, f in enumerate([0.1, 0.2, 0.4]):
        make_run(tmp_path, f"run{i}", [f"+family=mini/f{i}", "seed=0"], paper_metrics(f))
    main([str(tmp_path)])
    assert not (tmp_path / "report" / "correlations.md").exists()
    assert all("per_seed" not in entry for entry in entries(tmp_path / "report"))
    markdown = (tmp_path / "report" / "table.md").read_text()
    assert "## Runs" not in markdown and "Several seeds" not in markdown


def test_numeric_seeds_sort_as_numbers_and_labels_after_them():
    assert sorted(["10", "2", "b", "0", "a"], key=seed_order) == ["0", "2", "10", "a", "b"]


def test_several_seeds_means_one_method_with_two_different_seeds():
    def model(family: str, seed: str) -> Model:
        return Model(Run(Path(family + seed), {"seed": seed}, {}), Setting(family, ()), "")

    assert not several_seeds([model("a", "0"), model("b", "1"), model("c", "2")])
    assert not several_seeds([model("a", "0"), model("a", "0")])
    assert several_seeds([model("a", "0"), model("b", "0"), model("a", "1")])
