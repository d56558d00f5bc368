"""Helpers for tests that compare run directories and comparison records."""

from __future__ import annotations

import hashlib
from pathlib import Path


def snapshot(d: Path) -> dict[str, str]:
    """Every file under ``d`` → sha256 of its bytes (what "nothing changed" compares)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def without_fit_s(records: list[dict]) -> list[dict]:
    """Comparison records without ``fit_s`` (the fit's wall time: the one field that differs between equal runs)."""
    return [{k: v for k, v in r.items() if k != "fit_s"} for r in records]
