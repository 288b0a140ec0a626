"""The faithfulness table of docs/differences.md names tests that exist.

Each row cites ``test_file.py::test_name`` (later names in a cell may abbreviate the file as
``::test_name``); a renamed or deleted test would otherwise leave the table pointing at nothing.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "differences.md"


def _faithfulness_rows() -> list[str]:
    text = TABLE.read_text()
    section = text.split("## Faithfulness", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "`" in line]


def _cited_tests(row: str) -> list[tuple[str, str]]:
    """(file, test) pairs of the row's last cell, ``::name`` inheriting the previous file."""
    cell = row.rstrip(" |").rsplit("|", 1)[1]
    cited, current = [], ""
    for file, name in re.findall(r"`([\w/]*\.py)?::(\w+)`", cell):
        current = file or current
        cited.append((current, name))
    return cited


def _test_names(file: str) -> set[str]:
    tree = ast.parse((ROOT / "tests" / file).read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_every_faithfulness_row_cites_at_least_one_test() -> None:
    rows = _faithfulness_rows()
    assert len(rows) >= 15
    assert all(_cited_tests(row) for row in rows), [r for r in rows if not _cited_tests(r)]


def test_every_test_the_faithfulness_table_cites_exists() -> None:
    missing = [
        f"{file}::{name}"
        for row in _faithfulness_rows()
        for file, name in _cited_tests(row)
        if name not in _test_names(file)
    ]
    assert not missing
