"""Safe, atomic file I/O shared by every module that reads or writes tables, checkpoints and run artefacts.

Two rules (README, "What is trusted"):

* **Nothing is unpickled.** Arrays are read with ``np.load(allow_pickle=False)``, tensors with
  ``torch.load(weights_only=True)``. A file that needs pickle raises :class:`~adainf_env.errors.UnsafeFileError`
  before any of its payload runs.
* **Writes are atomic.** Data go to a temporary file in the destination directory, are flushed and fsynced, then
  ``os.replace``-d over the target: a crash mid-write leaves the old file (or none), never a half-written one.
  The file gets the permissions a plain ``open()`` would give it (``0o666`` less the umask).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping

import numpy as np

from adainf_env.errors import CheckpointError, TableFormatError, UnsafeFileError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "safe_np_load",
    "safe_torch_load",
    "atomic_torch_save",
    "sha256_file",
    "sha256_arrays",
    "save_figure",
]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on clean exit fsync it and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the mode open() would have (0666 less the umask) so artefacts stay
        # readable by the group/others the user's umask allows.
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _current_umask() -> int:
    """The process umask: read from /proc on Linux; elsewhere set and restored at once (POSIX has no query)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    """Content hash of named arrays: names, dtypes, shapes and bytes, in sorted-name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype.str).encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def safe_np_load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` into memory, refusing pickled members and reporting corruption clearly."""
    path = Path(path)
    if not path.is_file():
        raise TableFormatError(f"{path}: no such file")
    # np.load treats any file that is neither a zip nor an .npy as a pickle; classify by magic bytes first so that
    # garbage is reported as garbage and only a real pickle stream (protocol ≥ 2 starts with 0x80) as unsafe.
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic[:2] != b"PK" and magic != b"\x93NUMPY":
        if magic[:1] == b"\x80":
            raise UnsafeFileError(f"{path}: is a pickle stream; AdaInf never unpickles files")
        raise TableFormatError(f"{path}: not an .npz archive (unrecognised header {magic!r})")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise TableFormatError(f"{path}: expected an .npz archive of named arrays, found a single array")
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickle" in str(e).lower():
            raise UnsafeFileError(f"{path}: contains pickled objects; AdaInf never unpickles files") from None
        raise TableFormatError(f"{path}: unreadable array archive ({e})") from None
    except (zipfile.BadZipFile, zlib.error, struct.error, EOFError, OSError, KeyError, NotImplementedError,
            RuntimeError, OverflowError, MemoryError) as e:
        # zlib.error: corrupt deflate stream; NotImplementedError / RuntimeError: a zip member with an unsupported
        # compression method or encryption; MemoryError / OverflowError: a corrupt header claiming a huge array.
        raise TableFormatError(f"{path}: corrupt or truncated .npz ({type(e).__name__}: {e})") from None


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` on CPU with clear errors; a pickle payload is refused, never run."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(
            f"{path}: refused — loading it would unpickle arbitrary objects (weights_only=True rejected it: "
            f"{str(e).splitlines()[0][:200]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {str(e)[:200]})") from None


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)


def call_atomically(path: str | os.PathLike, writer: Callable[[IO[bytes]], None]) -> None:
    """Run ``writer(fileobj)`` against a temp file and rename it over ``path`` when it succeeds."""
    with atomic_write(path, "wb") as fh:
        writer(fh)


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Render a matplotlib figure to PNG and write it atomically; closes the figure."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
