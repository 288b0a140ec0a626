import csv
import json

import pytest
import yaml

from advflat.report.correlation import correlate
from advflat.cli.report import main


def make_run(root, name, overrides, metrics, history=None):
    path = root / name
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (path / "metrics.json").write_text(json.dumps(metrics))
    if history:
        (path / "history.json").write_text(json.dumps(history))
    return path


def test_correlation_of_an_exact_line_and_of_a_reversed_ranking():
    fit = correlate([1, 2, 3, 4], [3, 5, 7, 9])
    assert (fit.slope, fit.intercept, fit.pearson, fit.kendall) == pytest.approx((2, 1, 1, 1))
    assert correlate([1, 2, 3], [3, 2, 1]).kendall == pytest.approx(-1)
    assert correlate([1, 2], [1, 2]).n == 2  # too few points: NaN, not a crash


def test_report_averages_seeds_and_finds_the_known_correlation(tmp_path):
    # flatness f, test robust loss = 2f + 1 exactly; two seeds per label-smoothing value.
    for i, (ls, seed, f) in enumerate([(0.1, 0, 0.1), (0.1, 1, 0.3), (0.2, 0, 0.5), (0.2, 1, 0.7)]):
        metrics = {
            "flatness/average/robust": f,
            "test/robust_loss/pgd": 2 * f + 1,
            "robust_generalization_gap/pgd": -f,
            "test/robust_error/pgd": 0.4 + f / 10,
        }
        overrides = [f"trainer.label_smoothing={ls}", f"seed={seed}", "hydra.job.name=x"]
        history = {"1": {"test/adversarial_loss": 1.0}, "2": {"test/adversarial_loss": 0.9}}
        make_run(tmp_path, f"{i}", overrides, metrics, history)
    main([str(tmp_path)])
    out = tmp_path / "report"
    with (out / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["trainer.label_smoothing"] for r in rows] == ["0.1", "0.2"]
    assert [int(r["seeds"]) for r in rows] == [2, 2]
    assert float(rows[0]["test/robust_loss/pgd"]) == pytest.approx(1.4)
    assert float(rows[1]["test/robust_loss/pgd std"]) == pytest.approx(0.2828427, rel=1e-5)
    correlations = json.loads((out / "correlations.json").read_text())
    loss = correlations["flatness/average/robust vs test/robust_loss/pgd"]
    assert (loss["slope"], loss["pearson"], loss["kendall"]) == pytest.approx((2, 1, 1))
    gap = correlations["flatness/average/robust vs robust_generalization_gap/pgd"]
    assert gap["pearson"] == pytest.approx(-1)
    assert (out / "flatness_average_robust_vs_test_robust_loss.png").stat().st_size > 1000
    assert len(list((out / "curves").glob("*.png"))) == 4
    assert "± " in (out / "table.md").read_text()


def test_report_on_an_empty_directory_is_a_clear_error(tmp_path, caplog):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no runs" in caplog.text
