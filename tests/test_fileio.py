"""adainf_env.fileio: atomic writes leave files with the permissions the user's umask allows, and nothing behind."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest

from adainf_env.fileio import atomic_write, atomic_write_bytes, atomic_write_json
from adainf_env.tables.outcomes import save_table
from adainf_env.tables.toy import make_toy_table


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, mask, want):
    with _umask(mask):
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_write_json(tmp_path / "b.json", {"k": 1})
        save_table(make_toy_table(20), tmp_path / "t.npz")
        (tmp_path / "plain.txt").write_text("same as open()")
    for name in ("a.bin", "b.json", "t.npz", "plain.txt"):
        assert _mode(tmp_path / name) == want, (name, oct(_mode(tmp_path / name)))


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "keep.txt"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path, "wb") as fh:
            fh.write(b"half")
            raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
