"""Run directories shared by every experiment script.

A run lives in ``runs/<backbone>__<algo>__<seed>__<YYYYmmdd-HHMMSS>`` (or the directory given with ``--out``) and
holds ``config.json`` — the script's config dataclass, the git revision of the code (commit + whether the working tree
had uncommitted changes), the command line, package versions — next to the results, plots and TensorBoard events.
"""

from __future__ import annotations

import datetime as _dt
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
from adainf_lab.cli import config_to_dict

__all__ = ["run_name", "make_run_dir", "git_revision", "save_config"]

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
