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
    """Paths named by the README's folder map: a line at column 0 names a top-level entry, an indented one an entry
    of the last top-level folder (the name is the first word; descriptions follow after two or more spaces)."""
    block = README.split("## Layout")[1].split("```")[1]
    paths, parent = [], None
    for line in block.splitlines():
        if not line.strip():
            continue
        name = line.split()[0]
        if line.startswith(" "):
            assert parent is not None, f"indented layout line before any folder: {line!r}"
            paths.append(parent / name)
        else:
            parent = ROOT / name
            paths.append(parent)
    return paths


def test_layout_map_names_paths_that_exist():
    paths = _layout_paths()
    assert len(paths) >= 15
    assert len({p.parent for p in paths if p.parent != ROOT}) >= 2, "the map names no entries inside folders"
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    assert not missing, f"README layout names paths that do not exist: {missing}"


def test_module_map_in_docs_is_complete_and_true():
    text = (ROOT / "docs" / "layout.md").read_text()
    listed = set(re.findall(r"^\| `([^`]+\.py)` \|", text, flags=re.M))
    modules = {str(p.relative_to(ROOT)) for top in ("adainf_env", "agents", "adainf_lab", "experiments", "benchmarks",
                                                  "examples") for p in (ROOT / top).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert sorted(modules - listed) == [], "modules missing from docs/layout.md"
    assert sorted(listed - modules) == [], "docs/layout.md names modules that do not exist"


def test_readme_env_quick_start_runs():
    """The README's ten-line env example is real code: run it."""
    code = README.split("## The environments in ten lines")[1].split("```python")[1].split("```")[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["anytime"].unwrapped.options.action_mode == "stage"
    assert scope["envs"].num_envs == 1024


def test_readme_is_short():
    words = len(re.sub(r"```.*?```", " ", README, flags=re.S).split())
    assert words <= 1600, f"README has {words} words outside code blocks; details belong in docs/"


def test_readme_links_resolve():
    for target in re.findall(r"\]\(((?:docs|examples)/[^)#]+)\)", README):
        assert (ROOT / target).exists(), target


@pytest.mark.parametrize("script", sorted(set(re.findall(r"python ((?:experiments|benchmarks)/\w+\.py)", README))))
def test_readme_scripts_exist(script):
    assert (ROOT / script).is_file()
