"""docs/own_model.md runs as written: its files are written into a folder, its training script
and its advflat-eval command run there, and its Python evaluation gives the command's numbers."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import sys

import pytest

from advflat.cli.evaluate import main
from tests.conftest import ROOT

PAGE = (ROOT / "docs" / "own_model.md").read_text()
# A block is announced by an HTML comment on the line before its fence.
BLOCK = re.compile(r"<!-- (file|run): (\S+) -->\n```\w+\n(.*?)```", re.DOTALL)


def blocks(kind: str) -> dict[str, str]:
    return {name: body for k, name, body in BLOCK.findall(PAGE) if k == kind}


def eval_command() -> list[str]:
    """The page's advflat-eval command as argv (continuation lines joined)."""
    argv = shlex.split(blocks("run")["eval"].replace("\\\n", " "))
    assert argv[0] == "advflat-eval"
    return argv[1:]


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    for name, code in blocks("file").items():
        (tmp_path / name).write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("tinycnn", None)


def test_the_page_shows_the_model_the_training_script_the_command_and_the_python_evaluation():
    assert set(blocks("file")) == {"tinycnn.py", "train.py", "evaluate.py"}
    assert "--model" in eval_command() and "--out" in eval_command()


def test_the_worked_example_trains_evaluates_and_python_agrees_with_the_command(
    user_folder, capsys
):
    runpy.run_path("train.py", run_name="__main__")
    assert (user_folder / "tinycnn.pt").is_file()
    main(eval_command())  # raises SystemExit on any error
    out = user_folder / "outputs" / "evals" / "tinycnn"
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["source"] == "tinycnn:TinyCNN"
    # Two epochs of clean training: far better than chance on clean digits, not robust at ε 0.2.
    assert metrics["test/clean_error"] < 0.5
    assert metrics["test/robust_error/pgd"] > metrics["test/clean_error"]
    runpy.run_path("evaluate.py", run_name="__main__")
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    clean, pgd = metrics["test/clean_error"], metrics["test/robust_error/pgd"]
    assert printed == f"clean error {clean:.3f}, PGD {pgd:.3f}"
