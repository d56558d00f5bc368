"""The installed package's version, read from its metadata (``pyproject.toml`` is the one place it is written)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["adainf_version"]


def adainf_version() -> str:
    """``adainf``'s version as installed (``"0+unknown"`` for a source tree that was never installed)."""
    try:
        return version("adainf")
    except PackageNotFoundError:
        return "0+unknown"
