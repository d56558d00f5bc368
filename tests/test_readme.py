"""The README stays true: its headline numbers are cells of docs/results/compare_reference.md, its layout map names
paths that exist, and every script it tells you to run exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _results_tables() -> dict[tuple[str, str, str], str]:
    """``{(section, scheduler, budget): accuracy mean}`` from the generated results file."""
    out: dict[tuple[str, str, str], str] = {}
    section, budgets = None, []
    for line in (ROOT / "docs" / "results" / "compare_reference.md").read_text().splitlines():
        m = re.match(r"\*\*(.+?)\*\*", line)
        if m:
            section, budgets = m.group(1), []
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if section is None or len(cells) < 2 or set(cells[0]) <= {"-"}:
            continue
        if cells[0] == "scheduler":
            budgets = cells[1:]
            continue
        for b, cell in zip(budgets, cells[1:]):
            out[(section, cells[0], b)] = cell.split("±")[0].strip()
    return out


def _headline_rows() -> tuple[list[str], list[list[str]]]:
    block = README.split("<!-- headline:")[1].split("<!-- /headline -->")[0]
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in block.splitlines() if ln.startswith("|")]
    return rows[0], [r for r in rows[2:]]


def test_headline_numbers_match_the_generated_results():
    results = _results_tables()
    head, rows = _headline_rows()
    assert rows, "README headline table is empty"
    checked = 0
    for row in rows:
        section, budget = row[0], row[1]
        for name, value in zip(head[2:], row[2:]):
            key = (section, name, f"{float(budget):g}")
            assert key in results, f"README headline cell {key} is not in docs/results/compare_reference.md"
            assert value == results[key], f"README says {value} for {key}, docs/results says {results[key]}"
            checked += 1
    assert checked >= 8


def _layout_paths() -> list[Path]:
    block = README.split("## Layout")[1].split("```")[1]
    paths, parent = [], None
    for line in block.splitlines():
        if not line.strip():
            continue
        names = line.split("  ")[0].strip() if line.startswith("  ") else line.split()[0]
        top = not line.startswith("  ")
        for name in (n.strip() for n in names.split(",")):
            if top:
                parent = ROOT / name
                paths.append(parent)
            else:
                paths.append(parent / name)
    return paths


def test_layout_map_names_paths_that_exist():
    paths = _layout_paths()
    assert len(paths) > 20
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    assert not missing, f"README layout names paths that do not exist: {missing}"


@pytest.mark.parametrize("script", sorted(set(re.findall(r"python ((?:experiments|benchmarks)/\w+\.py)", README))))
def test_readme_scripts_exist(script):
    assert (ROOT / script).is_file()
