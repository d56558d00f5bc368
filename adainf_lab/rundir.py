"""Run directories shared by every experiment script.

A run lives in ``runs/<backbone>__<algo>__<seed>__<YYYYmmdd-HHMMSS>`` (or the directory given with ``--out``) and
holds ``config.json`` — the script's config dataclass, the git revision of the code (commit + whether the working tree
had uncommitted changes), the command line, package versions — next to the results, plots and TensorBoard events.

**A run is never lost** (:func:`check_run_dir`, :func:`open_run_dir`): ``--out`` naming an existing, non-empty
directory is refused unless

* ``--resume``: the directory's ``config.json`` must hold the same arguments (fields that do not change what is
  computed — :data:`RUN_CONTROL_FIELDS`, e.g. ``--workers``, ``--progress`` — may differ); anything else is refused
  before a byte is written, and the run continues from what the directory keeps (checkpoints, finished jobs);
* ``--overwrite``: the old directory is moved aside whole to ``<out>.replaced-<time>`` (never mixed with the new run;
  delete it yourself when you are sure).

A new run's ``config.json`` is written only once its arguments, files and tables were validated. Ctrl-C then ends with
one line saying what the directory keeps and the command that resumes it (:func:`adainf_lab.cli.run_script`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy

from adainf_env.errors import ConfigError
from adainf_env.version import adainf_version
from adainf_env.fileio import atomic_write_json
from adainf_lab.cli import config_to_dict, note_run_dir

__all__ = ["run_name", "make_run_dir", "git_revision", "save_config", "RUN_CONTROL_FIELDS", "RunDir",
           "check_run_flags", "check_run_dir", "open_run_dir", "config_differences"]

#: Config fields that say where and how a run is shown or spread, not what it computes: a ``--resume`` may change them.
RUN_CONTROL_FIELDS = frozenset({"out", "runs_root", "resume", "overwrite", "progress", "workers", "device",
                                "stop_after_epochs"})

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_name(backbone: str, algo: str, seed: int | str, when: _dt.datetime | None = None) -> str:
    """``backbone__algo__seed__YYYYmmdd-HHMMSS`` with unsafe characters replaced by ``-``."""
    when = when or _dt.datetime.now()
    parts = [_SAFE.sub("-", str(x)).strip("-") or "x" for x in (backbone, algo, seed)]
    return "__".join(parts + [when.strftime("%Y%m%d-%H%M%S")])


def make_run_dir(*, backbone: str, algo: str, seed: int | str, out: str | Path | None = None,
                 root: str | Path = "runs") -> Path:
    """Create and return the run directory: ``out`` if given (may exist, must be a directory), else a new
    ``root/run_name(...)`` (suffixed ``-2``, ``-3``… if that name is taken within the same second)."""
    if out is not None:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out {path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(root) / run_name(backbone, algo, seed)
    path, i = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            i += 1
            path = base.with_name(f"{base.name}-{i}")


def git_revision(cwd: str | Path | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the repository holding this package (None outside git)."""
    cwd = Path(cwd) if cwd is not None else Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"commit": None, "dirty": None}
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                            text=True, timeout=10)
        return {"commit": sha.stdout.strip(), "dirty": bool(st.stdout.strip()) if st.returncode == 0 else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def save_config(run_dir: str | Path, config: Any, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``run_dir/config.json``: the config (a dataclass or dict), git revision, argv, versions (atomic)."""
    cfg = config_to_dict(config) if not isinstance(config, Mapping) else dict(config)
    versions = {"adainf": adainf_version(), "python": platform.python_version(), "numpy": numpy.__version__}
    for mod in ("torch", "stable_baselines3", "gymnasium"):
        m = sys.modules.get(mod)
        if m is not None:
            versions[mod] = getattr(m, "__version__", None)
    doc = {
        "config": cfg,
        "config_class": type(config).__name__,
        "git": git_revision(),
        "argv": list(sys.argv),
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "versions": versions,
        **dict(extra or {}),
    }
    path = Path(run_dir) / "config.json"
    atomic_write_json(path, doc)
    return path


# ------------------------------------------------------------------------------------------------ the run-directory rule
@dataclasses.dataclass(frozen=True)
class RunDir:
    """An opened run directory: ``path``, whether the run ``resumed`` there, and where ``--overwrite`` moved the old
    directory (``replaced``; None otherwise)."""

    path: Path
    resumed: bool = False
    replaced: Path | None = None


def _is_used(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def check_run_flags(out: str | Path | None, *, resume: bool, overwrite: bool) -> None:
    """The parts of the run-directory rule a config can check on its own (no writes): ``--out`` is a directory if it
    exists; an existing non-empty ``--out`` needs ``--resume`` or ``--overwrite``; ``--resume`` needs one; never both."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other (continue the run, or replace it)")
    if out is None:
        if resume:
            raise ConfigError("--resume needs --out naming the run directory to continue")
        return
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} exists and is not a directory")
    if resume and not (path / "config.json").is_file():
        raise ConfigError(f"--resume: {path} is not a run directory (no config.json)")
    if _is_used(path) and not (resume or overwrite):
        raise ConfigError(f"--out {path} is an existing run directory; add --resume to continue it (same "
                          f"arguments) or --overwrite to move it aside and start over")


def config_differences(saved: Mapping[str, Any], config: Mapping[str, Any],
                       ignore: frozenset[str] = RUN_CONTROL_FIELDS) -> list[str]:
    """The config fields whose values differ (``--name: saved → now``), those in ``ignore`` left out."""
    keys = (set(saved) | set(config)) - set(ignore)
    missing = object()
    out = []
    for k in sorted(keys):
        a, b = saved.get(k, missing), config.get(k, missing)
        if a != b:
            show = (lambda v: "(absent)" if v is missing else json.dumps(v, default=str))
            out.append(f"--{k.replace('_', '-')}: {show(a)} → {show(b)}")
    return out


def check_run_dir(config: Any, *, out: str | Path | None, resume: bool, overwrite: bool,
                  ignore: frozenset[str] = RUN_CONTROL_FIELDS) -> None:
    """:func:`check_run_flags`, and with ``resume`` the saved ``config.json`` against ``config`` (a dataclass or a
    dict): the same config class and the same values outside ``ignore``, else :class:`ConfigError` naming them."""
    check_run_flags(out, resume=resume, overwrite=overwrite)
    if not resume:
        return
    path = Path(out) / "config.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume: {path} is unreadable ({e})") from None
    cfg = config_to_dict(config) if not isinstance(config, Mapping) else dict(config)
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise ConfigError(f"--resume: {path} holds no config")
    kind = type(config).__name__ if not isinstance(config, Mapping) else doc.get("config_class")
    if doc.get("config_class") != kind:
        raise ConfigError(f"--resume: {out} was made by another script ({doc.get('config_class')}, not {kind})")
    diff = config_differences(json.loads(json.dumps(doc["config"])), json.loads(json.dumps(cfg, default=str)),
                              ignore)
    if diff:
        raise ConfigError(f"--resume: {out} was made with other arguments ({'; '.join(diff)}); resume with the same "
                          f"arguments, or use --overwrite or another --out")


def open_run_dir(config: Any, *, backbone: str, algo: str, seed: int | str, out: str | Path | None,
                 root: str | Path = "runs", resume: bool = False, overwrite: bool = False,
                 extra: Mapping[str, Any] | None = None, ignore: frozenset[str] = RUN_CONTROL_FIELDS,
                 log: Any = None) -> RunDir:
    """Apply the run-directory rule (module docstring) and open the run directory; call it once the run's
    arguments, files and tables are validated. A new run (or an overwritten one) gets ``config.json`` (with
    ``extra``); a resumed one keeps its own. Registers the directory for the Ctrl-C line of
    :func:`adainf_lab.cli.run_script`."""
    check_run_dir(config, out=out, resume=resume, overwrite=overwrite, ignore=ignore)
    replaced = None
    if out is not None and overwrite and _is_used(Path(out)):
        path = Path(out)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        replaced, i = path.with_name(f"{path.name}.replaced-{stamp}"), 1
        while replaced.exists():
            i += 1
            replaced = path.with_name(f"{path.name}.replaced-{stamp}-{i}")
        path.rename(replaced)
        if log is not None:
            log(f"[run] --overwrite: the old {path} was moved aside whole to {replaced}")
    run_dir = make_run_dir(backbone=backbone, algo=algo, seed=seed, out=out, root=root)
    resumed = bool(resume)
    if not resumed:
        save_config(run_dir, config, extra=extra)
    note_run_dir(run_dir)
    return RunDir(run_dir, resumed, replaced)
