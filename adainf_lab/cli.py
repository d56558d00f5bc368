"""Command lines of the experiment scripts: one config dataclass → one CLI (tyro), one way to fail.

Conventions (every script in ``experiments/`` and ``benchmarks/bench_executor.py``):

* field ``foo_bar`` is ``--foo-bar``; its help text is ``field(metadata={"help": ...})`` (or the field's docstring);
  ``--help`` shows every option with its default, and the choices of ``Literal[...]`` fields;
* booleans are flags: ``--plots`` / ``--no-plots``; ``X | None`` fields take ``None``; sequences take several
  values separated by spaces (``--budgets 0.3 0.5 1``); a nested dataclass field ``scheduler`` gives
  ``--scheduler.n-envs`` … (its own group in ``--help``);
* one way to fail: a bad argument, or a value the config's validation (``__post_init__``) rejects, is a
  :class:`~adainf_env.errors.ConfigError` raised by the script's ``main(argv)`` before any work starts
  (``parse_config(..., raise_errors=True)``); as a command (``run_script(main)``) that — and any other
  :class:`~adainf_env.errors.AdaInfError` the script raises later (missing file, table mismatch, …) — becomes
  **exit status 2 with one line** ``error: …`` on stderr and no traceback;
* Ctrl-C (``KeyboardInterrupt``) or SIGTERM ends a command with **one line** on stderr and exit status 130: what the run
  directory keeps and the command that resumes it (``--out DIR --resume``), or that nothing was saved yet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence, TypeVar

import tyro

from adainf_env.errors import AdaInfError, ConfigError

__all__ = ["parse_config", "config_to_dict", "run_script", "exit_with_error", "note_run_dir", "resume_command",
           "interrupt_line"]

#: The run directory the running command opened (:func:`note_run_dir`), for the Ctrl-C line.
_ACTIVE: dict[str, Any] = {"run_dir": None, "script": None, "argv": None}

T = TypeVar("T")

_BOX_CHARS = re.compile(r"[╭╮╰╯│]")
_RULE = re.compile(r"^[\s─]+$")


def _one_line(tyro_message: str) -> str:
    """The first paragraph of tyro's boxed error message as one line (the box title and helptext are dropped)."""
    lines = [_BOX_CHARS.sub("", ln).strip() for ln in tyro_message.splitlines()]
    body: list[str] = []
    for ln in lines[1:]:  # lines[0] is the box's top edge with its title
        if not ln or _RULE.match(ln):
            if body:
                break
            continue
        body.append(ln)
    text = " ".join(body) or " ".join(ln for ln in lines if ln and not _RULE.match(ln))
    return re.sub(r"\s+", " ", text).strip() or "invalid command line"


def exit_with_error(error: BaseException) -> NoReturn:
    """Print ``error: <message>`` (one line, no traceback) on stderr and exit with status 2."""
    print(f"error: {error}".replace("\n", " "), file=sys.stderr, flush=True)
    sys.exit(2)


def parse_config(cls: type[T], argv: Sequence[str] | None = None, *, description: str | None = None,
                 raise_errors: bool = False) -> T:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into an instance of dataclass ``cls`` with tyro.

    A bad argument or a config value rejected by ``cls``'s validation exits with status 2 and one ``error:`` line
    (``--help`` prints the help and exits 0); with ``raise_errors=True`` it raises instead: the config's own
    :class:`~adainf_env.errors.AdaInfError` when its validation failed, else :class:`ConfigError`.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    desc = description if description is not None else (cls.__doc__ or "").strip().split("\n\n")[0]
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):  # tyro's boxed error → one line below; --help goes to stdout
            return tyro.cli(cls, args=list(argv) if argv is not None else None, description=desc)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        cause = e.__context__
        # tyro reports a ValueError of the config's validation inside its own box; keep the original error
        error = cause if isinstance(cause, AdaInfError) else ConfigError(
            f"command line: {_one_line(captured.getvalue())}")
    if raise_errors:
        raise error
    exit_with_error(error)


def note_run_dir(run_dir: str | Path) -> None:
    """Record the run directory the running command works in (:func:`adainf_lab.rundir.open_run_dir` calls this)."""
    _ACTIVE["run_dir"] = Path(run_dir)


def resume_command(run_dir: str | Path, argv: Sequence[str], script: str) -> str:
    """The command line that continues the run in ``run_dir``: ``argv`` with ``--out run_dir --resume`` (any
    ``--out``/``--resume``/``--overwrite`` given before replaced)."""
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--out", "--resume", "--overwrite", "--no-resume", "--no-overwrite") or a.startswith(
                ("--out=", "--resume=", "--overwrite=")):
            skip = a == "--out"
            continue
        args.append(a)
    return shlex.join(["python", script, *args, "--out", str(run_dir), "--resume"])


def _kept(run_dir: Path) -> str:
    """What a run directory holds, in a few words: its entries, finished jobs and checkpoints counted."""
    try:
        entries = sorted(run_dir.iterdir())
    except OSError:
        return "nothing readable"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries if not p.name.startswith(".")]
    jobs = run_dir / "jobs"
    if jobs.is_dir():
        n = sum(1 for p in jobs.glob("*.json") if not p.name.startswith("."))
        names = [f"jobs/ ({n} finished job{'s' if n != 1 else ''})" if x == "jobs/" else x for x in names]
    ckpts = sorted(str(p.relative_to(run_dir)) for p in run_dir.glob("checkpoints/**/*.pt"))
    if ckpts:
        names = [f"checkpoints/ ({', '.join(ckpts)})" if x == "checkpoints/" else x for x in names]
    return ", ".join(names) or "nothing yet"


def interrupt_line(argv: Sequence[str], script: str) -> str:
    """The one line a Ctrl-C ends a command with (see the module docstring)."""
    run_dir = _ACTIVE["run_dir"]
    if run_dir is None:
        return "interrupted before a run directory was made: nothing was saved"
    return (f"interrupted: {run_dir} keeps {_kept(run_dir)}; resume with: "
            f"{resume_command(run_dir, argv, script)}")


def run_script(main: Callable[..., Any], argv: Sequence[str] | None = None) -> Any:
    """Run a script's ``main(argv)``; bad input (:class:`AdaInfError`) → one ``error:`` line and exit status 2;
    Ctrl-C or SIGTERM → one line (what was saved, the command that resumes) and exit status 130."""
    args = list(sys.argv[1:] if argv is None else argv)
    _ACTIVE["run_dir"] = None
    # SIGTERM (timeout, a batch scheduler, kill) ends the run like Ctrl-C: the same line, the same resume command
    previous = (signal.signal(signal.SIGTERM, _terminated)
                if threading.current_thread() is threading.main_thread() else None)
    try:
        return main(None if argv is None else list(argv))
    except AdaInfError as e:
        exit_with_error(e)
    except KeyboardInterrupt:
        script = sys.argv[0] if argv is None else getattr(sys.modules.get(main.__module__), "__file__", "") or ""
        with contextlib.suppress(ValueError):
            script = os.path.relpath(script)
        print(interrupt_line(args, script).replace("\n", " "), file=sys.stderr, flush=True)
        sys.exit(130)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-able dict of a config dataclass (nested dataclasses → dicts, Paths → str, tuples → lists)."""
    def conv(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        return v
    return {k: conv(v) for k, v in dataclasses.asdict(config).items()}
