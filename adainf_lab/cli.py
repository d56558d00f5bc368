"""One config dataclass → one command-line interface (every experiment script uses this).

Field ``foo_bar`` becomes ``--foo-bar``; its help text is ``field(metadata={"help": ...})``. Supported field types:
``int``, ``float``, ``str``, ``Path``, ``bool`` (``--flag`` / ``--no-flag``), ``X | None`` (``none`` on the command
line gives None), ``Literal[...]`` (choices), ``tuple[X, ...]`` / ``list[X]`` (several values, or one
comma-separated value). A field without a default is a required option. The dataclass's ``__post_init__`` may
validate and raise :class:`~adainf_env.errors.ConfigError`.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

from adainf_env.errors import ConfigError

__all__ = ["build_parser", "parse_config", "config_to_dict"]

T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that raises :class:`ConfigError` instead of exiting, when asked to."""

    def __init__(self, *a: Any, raise_errors: bool = False, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self._raise_errors = raise_errors

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        if self._raise_errors:
            raise ConfigError(f"command line: {message}")
        super().error(message)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(types, "UnionType", None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return tp, False


def _scalar(tp: Any, name: str):
    if tp is bool:
        def conv_bool(s: str) -> bool:
            v = s.strip().lower()
            if v in ("1", "true", "yes", "on"):
                return True
            if v in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"--{name}: expected true/false, got {s!r}")
        return conv_bool
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)

        def conv_lit(s: str) -> Any:
            for c in choices:
                if str(c) == s:
                    return c
            raise argparse.ArgumentTypeError(f"--{name}: expected one of {list(choices)}, got {s!r}")
        return conv_lit
    if tp in (int, float, str, Path):
        def conv(s: str) -> Any:
            try:
                return tp(s)
            except ValueError:
                raise argparse.ArgumentTypeError(f"--{name}: expected {tp.__name__}, got {s!r}") from None
        return conv
    raise TypeError(f"unsupported config field type for --{name}: {tp!r}")


def build_parser(cls: type, *, description: str | None = None, raise_errors: bool = False) -> argparse.ArgumentParser:
    """An argparse parser with one option per field of dataclass ``cls``."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    parser = _Parser(description=description or (cls.__doc__ or "").strip().split("\n")[0], allow_abbrev=False,
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter, raise_errors=raise_errors)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        name = f.name.replace("_", "-")
        tp, optional = _unwrap_optional(hints[f.name])
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        kw: dict[str, Any] = {"help": f.metadata.get("help", ""), "dest": f.name}
        if has_default:
            kw["default"] = default
        else:
            kw["required"] = True
        origin = typing.get_origin(tp)
        if tp is bool and not optional:
            kw["action"] = argparse.BooleanOptionalAction
            parser.add_argument(f"--{name}", **kw)
            continue
        if origin in (tuple, list, collections.abc.Sequence):
            item = typing.get_args(tp)[0] if typing.get_args(tp) else str
            conv = _scalar(item, name)

            def conv_items(s: str, conv=conv) -> list:
                return [conv(x) for x in s.split(",") if x.strip() != ""]
            kw["type"] = conv_items
            kw["nargs"] = "+"
            kw["metavar"] = getattr(item, "__name__", "X").upper()
        else:
            conv = _scalar(tp, name)
            if optional:
                def conv_opt(s: str, conv=conv) -> Any:
                    return None if s.strip().lower() == "none" else conv(s)
                kw["type"] = conv_opt
            else:
                kw["type"] = conv
            if typing.get_origin(tp) is typing.Literal:
                kw["metavar"] = "{" + ",".join(map(str, typing.get_args(tp))) + "}"
        parser.add_argument(f"--{name}", **kw)
    return parser


def parse_config(cls: type[T], argv: Sequence[str] | None = None, *, description: str | None = None,
                 raise_errors: bool = False) -> T:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into an instance of dataclass ``cls``.

    With ``raise_errors=True`` a bad command line raises :class:`ConfigError` instead of exiting with status 2.
    """
    parser = build_parser(cls, description=description, raise_errors=raise_errors)
    ns = vars(parser.parse_args(argv))
    hints = typing.get_type_hints(cls)
    for k, v in list(ns.items()):
        if isinstance(v, list):  # nargs="+" with comma-splitting gives a list of lists
            flat = [x for part in v for x in (part if isinstance(part, list) else [part])]
            tp, _ = _unwrap_optional(hints[k])
            ns[k] = tuple(flat) if typing.get_origin(tp) is tuple else flat
    try:
        return cls(**ns)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"bad configuration: {e}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-able dict of a config dataclass (Paths → str, tuples → lists)."""
    def conv(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        return v
    return {k: conv(v) for k, v in dataclasses.asdict(config).items()}
