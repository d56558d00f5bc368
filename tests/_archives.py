"""Tiny image-folder archives in a dataset's layout (random-noise JPEGs), so the data code runs on the same path as
for the real datasets without shipping them."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["noise_jpeg_archive"]


def noise_jpeg_archive(path: Path, classes: Sequence[str], per_class: Mapping[str, int], *, seed: int = 0) -> Path:
    """Write ``path`` (tar.gz) with ``per_class[split]`` 32×32 noise JPEGs ``<split>/<class>/<i>.jpg`` per class,
    drawn from ``default_rng(seed)`` split by split, class by class; returns ``path``."""
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in per_class.items():
            for c in classes:
                for i in range(n):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
                    info = tarfile.TarInfo(f"{split}/{c}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
    return path
