"""Fuzz (hypothesis) over the command line of every script in experiments/ and over table metadata (issue #18).

Every script's ``main(argv)`` runs in-process as a command (:func:`adainf_lab.cli.run_script`) on argument lists drawn
from its own options and a pool of hostile values (negative, NaN, infinite, huge, non-numeric, empty, missing and
existing paths, an existing run directory, bad JSON, unknown names). The only outcomes allowed:

* exit status 2 with exactly one ``error: …`` line on stderr and no traceback (the project's own errors),
* ``--help``: status 0,
* or the arguments were valid: the script reached the point where its work starts (where it would write its run
  directory, build its table or archive, or start its analysis) — the test stops it there, after the run-directory
  rule was checked;

and no file of an existing run directory changes, whatever the arguments.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _rundirs import snapshot
from adainf_env.errors import TableFormatError
from adainf_env.tables.outcomes import load_table, save_table
from adainf_env.tables.toy import make_toy_table
from adainf_lab import rundir
from adainf_lab.cli import run_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("build_table", "clip_vitb", "compare_schedulers", "hinge_finetune_resnet18", "make_demo_data",
           "ppo_resnet18", "resnet32_cifar100", "shifting_budgets", "stream_ceiling", "train_backbone",
           "train_scheduler")


class WorkStarted(Exception):
    """Raised where a script would start its work: its arguments passed every check."""


def _stop_before_work(config: Any, *, out: Any = None, resume: bool = False, overwrite: bool = False,
                      **_: Any) -> None:
    """Stands in for :func:`adainf_lab.rundir.open_run_dir`: the rule is checked (it may refuse), nothing written."""
    rundir.check_run_dir(config, out=out, resume=resume, overwrite=overwrite)
    raise WorkStarted


def _raise_work(*_: Any, **__: Any) -> None:
    raise WorkStarted


@pytest.fixture(scope="module")
def scripts() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        return {name: importlib.import_module(name) for name in SCRIPTS}
    finally:
        sys.path.remove(str(ROOT / "experiments"))


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory, scripts) -> dict[str, Path]:
    """A toy table directory and a finished run directory (whose files must never change)."""
    d = tmp_path_factory.mktemp("fuzz")
    tables = d / "tables"
    tables.mkdir()
    save_table(make_toy_table(200, seed=0, split="calib"), tables / "table_calib.npz")
    save_table(make_toy_table(100, seed=1, split="test"), tables / "table_test.npz")
    run = d / "run"
    scripts["train_scheduler"].main(["--algo", "lut", "--table-dir", str(tables), "--out", str(run), "--budgets",
                                     "0.5", "--no-plots", "--no-progress"])
    (d / "a_file.txt").write_text("not a table\n")
    return {"dir": d, "tables": tables, "run": run, "file": d / "a_file.txt"}


def _options(config_cls: type, prefix: str = "") -> list[str]:
    """``--name`` of every field (``--no-name`` too for booleans; nested dataclasses as ``--outer.inner``)."""
    out: list[str] = []
    for f in dataclasses.fields(config_cls):
        name = prefix + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            out += _options(type(default), name + ".")
            continue
        out.append(f"--{name}")
        if isinstance(default, bool):
            out.append(f"--no-{name}" if not prefix else f"--{prefix}no-{f.name.replace('_', '-')}")
    return out


def _config_class(module: Any) -> type:
    """The script's config dataclass (its own, the fine-tuning config it re-exports, or the pipeline's)."""
    from adainf_lab.config import PipelineConfig

    classes = [v for v in vars(module).values() if isinstance(v, type) and dataclasses.is_dataclass(v)
               and v.__module__ in (module.__name__, "adainf_lab.finetune") and v.__name__.endswith("Config")]
    named = [c for c in classes if c.__module__ == module.__name__] or classes
    return named[0] if named else PipelineConfig


#: Hostile values (paths filled in per run: {run}, {tables}, {file}, {missing}).
VALUES = ["-1", "0", "1", "3", "-7", "0.5", "1.5", "-0.1", "nan", "inf", "-inf", "1e309", "2**40", "4294967296",
          "abc", "", " ", "None", "True", "false", "{}", "{bad", '{"x": 1}', "[1, 2]", "fixd:0.3", "step:every=-1",
          "random_walk:sigma=nan", "nope", "ppo", "lut", "anytime_lut", "cifar10", "all", "{run}", "{tables}",
          "{file}", "{missing}", "--", "-", "é", "\x00"]


def _argv(draw_tokens: list[str], paths: dict[str, Path]) -> list[str]:
    fill = {"{run}": str(paths["run"]), "{tables}": str(paths["tables"]), "{file}": str(paths["file"]),
            "{missing}": str(paths["dir"] / "missing")}
    return [fill.get(t, t) for t in draw_tokens]


@pytest.mark.parametrize("name", SCRIPTS)
def test_cli_fuzz_only_own_errors_and_no_run_directory_changes(name, scripts, fixtures, monkeypatch, capsys,
                                                               tmp_path):
    module = scripts[name]
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ADAINF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ADAINF_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.delenv("ADAINF_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    # where each script's work starts: stopped there (after the run-directory rule was checked)
    for mod in ("adainf_lab.pipeline", "adainf_lab.finetune"):
        monkeypatch.setattr(importlib.import_module(mod), "open_run_dir", _stop_before_work)
    for attr, stub in (("open_run_dir", _stop_before_work), ("run", _raise_work),
                       ("write_archive_subset", _raise_work), ("ceiling_analysis", _raise_work),
                       ("load_backbone", _raise_work)):
        if hasattr(module, attr) and not (name == "build_table" and attr == "load_backbone"):
            monkeypatch.setattr(module, attr, stub)
    options = _options(_config_class(module))
    before = snapshot(fixtures["run"])
    tokens = st.lists(st.sampled_from(options + ["--help"]) | st.sampled_from(VALUES), max_size=7)
    prefix = st.sampled_from([[], ["--table-dir", "{tables}"], ["--out", "{run}"],
                              ["--table-dir", "{tables}", "--out", "{run}"]])
    seen: set[Any] = set()

    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(pre=prefix, body=tokens)
    def check(pre: list[str], body: list[str]) -> None:
        argv = _argv(pre + body, fixtures)
        capsys.readouterr()
        try:
            status = run_script(module.main, argv)
        except WorkStarted:
            status = "work"
        except SystemExit as e:
            status = e.code
        err = capsys.readouterr().err
        assert "Traceback" not in err, (argv, err)
        if status == 2:  # build_table returns its status; the others exit with it
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
        else:
            assert status in ("work", 0, None), (argv, status, err)
        assert snapshot(fixtures["run"]) == before, argv
        seen.add(status)

    check()
    assert 2 in seen  # the fuzz did reach the errors it is about


_META_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True),
                         st.text(max_size=6), st.lists(st.integers(-3, 3), max_size=3),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(["full_macs", "num_classes", "classes", "backbone", "dataset",
                                                "split", "plan_space", "checkpoint_sha256", "format_version",
                                                "content_sha256"]), _META_VALUES, min_size=1, max_size=3))
def test_table_metadata_fuzz_raises_only_table_format_errors(tmp_path, changes):
    """Any metadata values: the table loads (values that fit) or TableFormatError — never a raw numpy / Type /
    Attribute error."""
    path = tmp_path / "t.npz"
    t = make_toy_table(40, seed=0, split="calib")
    arrays = {k: getattr(t, k) for k in ("pred", "loss", "conf", "features", "label", "sample_index", "plan_masks",
                                         "plan_macs")}
    meta = {**t.meta, "format_version": 1, **changes}
    with open(path, "wb") as fh:
        np.savez(fh, **arrays, meta_json=np.array(json.dumps(meta, default=str)))
    try:
        table = load_table(path)
    except TableFormatError:
        return
    assert table.full_macs > 0 and table.num_classes >= 1
