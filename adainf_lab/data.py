"""Where an experiment's images come from: a user-given source, a local torchvision copy, or the shipped demo sample.

Nothing here downloads unless the user asked for it (``--download``): with no source given, the default locations
below are searched for an already-downloaded torchvision CIFAR copy; if none is found, the caller either falls back to
the small real-image demo sample shipped in the package (``ppo_resnet18.py`` and friends) or raises
:class:`~adainf_env.errors.DataSourceError` naming the options (``resnet32_cifar100.py``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from adainf_env.data import cache_dir, demo_archive_path
from adainf_env.errors import DataSourceError
from adainf_env.fileio import sha256_file

__all__ = ["DataChoice", "default_data_roots", "find_local_dataset", "resolve_data", "evenly_spaced",
           "TORCHVISION_FOLDERS"]

#: Folder torchvision's CIFAR classes create under their root (``base_folder``).
TORCHVISION_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


@dataclasses.dataclass(frozen=True)
class DataChoice:
    """The resolved data source of a run. ``kind``: ``"user"`` (given with --data or --download), ``"local"`` (found
    in a default location) or ``"demo"`` (the shipped sample). ``source_id`` identifies it for table caching."""

    kind: str
    source: Path | None
    dataset: str
    download: bool
    source_id: str


def evenly_spaced(indices: np.ndarray, n: int | None) -> np.ndarray:
    """``n`` evenly spaced entries of sorted ``indices`` (all when None or ≥ len). Subsets are spread out because
    image-folder archives are sorted by class: "the first N" of a split would hold one or two classes."""
    indices = np.asarray(indices, dtype=np.int64)
    if n is None or n >= len(indices):
        return indices
    return indices[np.unique(np.linspace(0, len(indices) - 1, int(n)).round().astype(np.int64))]


def default_data_roots() -> list[Path]:
    """Searched in order: ``$ADAINF_DATA``, ``./data``, ``~/data``, ``$ADAINF_CACHE/torchvision`` (or
    ``~/.cache/adainf/torchvision``, where ``--download`` puts the data)."""
    roots = []
    env = os.environ.get("ADAINF_DATA")
    if env:
        roots.append(Path(env).expanduser())
    roots += [Path("data"), Path("~/data").expanduser(), cache_dir() / "torchvision"]
    return roots


def find_local_dataset(dataset: str) -> Path | None:
    """The first default root holding torchvision's files for ``dataset`` (no download), else None."""
    folder = TORCHVISION_FOLDERS.get(dataset)
    if folder is None:
        return None
    for root in default_data_roots():
        if (root / folder).is_dir():
            return root
    return None


def _source_id(path: Path, dataset: str) -> str:
    if path.is_file():  # an archive: identified by its content, wherever it lies
        return f"archive:{sha256_file(path)[:16]}"
    return f"torchvision:{dataset}"


def resolve_data(data: str | os.PathLike | None, dataset: str, *, download: bool = False,
                 allow_demo: bool = True, force_demo: bool = False) -> DataChoice:
    """Pick the data source (see module docstring). ``data`` is an archive path or a torchvision root."""
    if force_demo:
        demo = demo_archive_path()
        if not demo.is_file():
            raise DataSourceError(f"the demo sample {demo} is missing from this installation")
        return DataChoice("demo", demo, dataset, False, _source_id(demo, dataset))
    if data is not None:
        path = Path(data).expanduser()
        if not path.exists() and not download:
            raise DataSourceError(f"--data {path}: no such file or directory (give an image-folder archive such as "
                                  f"cifar10-jpg.tgz, a torchvision root holding {TORCHVISION_FOLDERS.get(dataset)}, "
                                  f"or add --download)")
        return DataChoice("user", path, dataset, download, _source_id(path, dataset))
    if download:
        root = cache_dir() / "torchvision"
        return DataChoice("user", root, dataset, True, f"torchvision:{dataset}")
    found = find_local_dataset(dataset)
    if found is not None:
        return DataChoice("local", found, dataset, False, f"torchvision:{dataset}")
    if allow_demo and dataset == "cifar10":
        return resolve_data(None, dataset, force_demo=True)
    where = ", ".join(str(r) for r in default_data_roots())
    raise DataSourceError(
        f"no {dataset} data found (looked for {TORCHVISION_FOLDERS.get(dataset, dataset)}/ under {where}). "
        f"Options: --data ROOT (a torchvision root that holds {dataset}), --data ARCHIVE.tgz (an image-folder archive "
        f"<split>/<class>/<image>.jpg), or --download to let torchvision download it (needs network)")
