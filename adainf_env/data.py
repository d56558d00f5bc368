"""Datasets for AdaInf: CIFAR-10/100 (torchvision), ImageNet (a user's local copy), image-folder archives.

Every loader returns the same thing — ``images`` uint8 [N, 3, H, W] and ``labels`` int64 [N] — so backbones
(:meth:`SkippableBackbone.prepare`) do all preprocessing and nothing here depends on a model.

Sources accepted by :func:`load_images`:

* an **image-folder archive** (``.tgz`` / ``.tar.gz`` / ``.tar``) laid out as ``<split>/<class>/<file>.jpg``, e.g.
  ``../shared/data/cifar10-jpg.tgz``. Members are taken in sorted path order; class index = position of the class
  name in the sorted list of class folders. It is decoded once into a uint8 ``.npz`` cache (written atomically under
  ``$ADAINF_CACHE`` or ``~/.cache/adainf``, keyed by the archive's sha256) and reused after;
* a **torchvision root** directory for ``dataset="cifar10" | "cifar100"`` (downloaded there only when
  ``download=True``);
* an **image-folder directory** ``<root>/<split>/<class>/*`` (``dataset="imagefolder"``, or ``"imagenet"`` whose
  test split is ``val``): decoded, resized (shorter side) and centre-cropped to ``image_size``; with ``limit``, an
  evenly spaced subset in sorted order (all classes represented).

Splits (:func:`make_splits`): the dataset's train split is divided into *fit* (trains the backbone) and *calib*
(trains schedulers, picks look-up-table plans) deterministically from a seed, or with the reference calibration
indices of ``../shared/reference/calib_indices.npy``; the dataset's test split only evaluates.
"""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from pathlib import Path
import numpy as np

from adainf_env.errors import ConfigError, DataSourceError, TableFormatError, UnsafeFileError
from adainf_env.fileio import atomic_write, safe_np_load, sha256_file

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "DATASETS",
    "cache_dir",
    "class_names",
    "demo_archive_path",
    "load_archive",
    "load_images",
    "load_calib_indices",
    "make_splits",
    "write_archive_subset",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# Sorted fine-label names of CIFAR-100 (the order of torchvision's CIFAR100.classes).
CIFAR100_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)
DATASETS = ("cifar10", "cifar100", "imagenet", "imagefolder")
_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
_SPLITS = ("train", "test")
_ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_CACHE_VERSION = 1  # bump when the cache layout changes so stale caches are rebuilt, never misread

_OPTIONS = (
    "options: (1) an image-folder archive such as cifar10-jpg.tgz (<split>/<class>/<image>.jpg); "
    "(2) a torchvision root directory that already holds the dataset; "
    "(3) download=True (CIFAR-10/100 only) to let torchvision download it into the root (or the cache dir); "
    "(4) for ImageNet, a local copy with <root>/train/<class>/ and <root>/val/<class>/ folders"
)


# --------------------------------------------------------------------------------------------------- small helpers
def cache_dir() -> Path:
    """Where decoded archives and downloads go: ``$ADAINF_CACHE`` or ``~/.cache/adainf``."""
    return Path(os.environ.get("ADAINF_CACHE") or (Path.home() / ".cache" / "adainf")).expanduser()


def demo_archive_path() -> Path:
    """The small real-image CIFAR-10 sample shipped inside the package (same layout as the full archive)."""
    return Path(__file__).resolve().parent / "demo_data" / "cifar10_demo.tgz"


def class_names(dataset: str) -> tuple[str, ...]:
    """Class names of a built-in dataset, in label order."""
    if dataset == "cifar10":
        return CIFAR10_CLASSES
    if dataset == "cifar100":
        return CIFAR100_CLASSES
    raise ConfigError(f"no built-in class names for dataset {dataset!r}; known: cifar10, cifar100 "
                      f"(for an archive use load_archive(...)[2])")


def _check_args(dataset: str, split: str) -> None:
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if split not in _SPLITS:
        raise ConfigError(f"unknown split {split!r}; use 'train' or 'test' (fit/calib are subsets of train: "
                          f"see make_splits)")


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(_ARCHIVE_SUFFIXES)


# --------------------------------------------------------------------------------------------------- public API
def load_images(source: str | os.PathLike | None, dataset: str = "cifar10", split: str = "train", *,
                download: bool = False, image_size: int = 224,
                limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 3, H, W] and labels int64 [N] of one split (``"train"`` or ``"test"``).

    ``source``: an archive path, a torchvision root, an image-folder root, or None (then only ``download=True``
    works, into :func:`cache_dir`). ``image_size`` and ``limit`` (first ``limit`` images in sorted order) apply to
    image folders (ImageNet), whose images differ in size; CIFAR sources are always 32×32.
    Raises :class:`DataSourceError` when no usable source is found, naming the options.
    """
    _check_args(dataset, split)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive int or None, got {limit!r}")
    if source is None:
        if not download or dataset not in ("cifar10", "cifar100"):
            raise DataSourceError(f"no data source given for {dataset} ({split}); {_OPTIONS}")
        source = cache_dir() / "torchvision"
    path = Path(source).expanduser()
    if path.is_file() or _is_archive(path):
        if not path.is_file():
            raise DataSourceError(f"{path}: archive not found; {_OPTIONS}")
        images, labels, _ = load_archive(path, split=split, dataset=dataset)
    elif dataset in ("cifar10", "cifar100") and not (path / split).is_dir():
        images, labels = _load_torchvision_cifar(path, dataset, split, download)
    else:
        images, labels = _load_image_folder(path, dataset, split, image_size, limit)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def load_archive(path: str | os.PathLike, *, split: str = "train",
                 dataset: str = "cifar10") -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images, labels and class names of one split of an image-folder archive, through the decode cache.

    Corrupt or truncated archives raise :class:`DataSourceError`; the cache is only written after the whole split
    decoded cleanly (atomically), so a failure leaves no cache file behind.
    """
    _check_args(dataset, split)
    path = Path(path)
    if not path.is_file():
        raise DataSourceError(f"{path}: archive not found; {_OPTIONS}")
    digest = sha256_file(path)
    cache = cache_dir() / "archives" / f"{digest}_{split}_v{_CACHE_VERSION}.npz"
    if cache.is_file():
        try:
            z = safe_np_load(cache)
            return z["images"], z["labels"].astype(np.int64), tuple(str(c) for c in z["classes"])
        except (TableFormatError, UnsafeFileError, KeyError):
            cache.unlink(missing_ok=True)  # unreadable cache: rebuild it from the archive below
    images, labels, classes = _decode_archive(path, split)
    expected = _NUM_CLASSES.get(dataset)
    if expected is not None and dataset != "imagenet" and len(classes) != expected:
        raise DataSourceError(f"{path}: split {split!r} has {len(classes)} class folders, {dataset} has {expected}")
    with atomic_write(cache, "wb") as fh:
        np.savez(fh, images=images, labels=labels, classes=np.array(classes, dtype=np.str_))
    return images, labels, classes


def load_calib_indices(path: str | os.PathLike, *, num_train: int | None = None) -> np.ndarray:
    """Read a ``calib_indices.npy`` (int array of train indices) safely, validated, as sorted int64."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataSourceError(f"{path}: calibration-index file not found") from None
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise UnsafeFileError(f"{path}: contains pickled objects; AdaInf never unpickles files") from None
        raise DataSourceError(f"{path}: unreadable index array ({e})") from None
    except (OSError, EOFError) as e:
        raise DataSourceError(f"{path}: unreadable index array ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):
        raise DataSourceError(f"{path}: expected a single .npy array of indices")
    return _validate_indices(arr, num_train, str(path))


def _validate_indices(arr: np.ndarray, num_train: int | None, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"{what}: calibration indices must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or (num_train is not None and arr.max() >= num_train)):
        raise ConfigError(f"{what}: calibration indices out of range [0, {num_train})")
    if np.unique(arr).size != arr.size:
        raise ConfigError(f"{what}: calibration indices contain duplicates")
    return np.sort(arr)


def make_splits(num_train: int, seed: int = 0, num_calib: int = 10_000,
                reference_calib_indices: np.ndarray | str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Split train indices ``0 … num_train-1`` into ``fit`` (backbone training) and ``calib`` (schedulers).

    Deterministic from ``seed`` (a NumPy PCG64 permutation; the first ``num_calib`` go to calib). With
    ``reference_calib_indices`` (an array or a ``.npy`` path, e.g. ``../shared/reference/calib_indices.npy``) calib is
    exactly those indices and ``seed`` / ``num_calib`` are ignored. Both arrays are sorted int64 and disjoint; the
    test split is the dataset's own test split and never appears here.
    """
    if not isinstance(num_train, (int, np.integer)) or num_train < 2:
        raise ConfigError(f"num_train must be an int ≥ 2, got {num_train!r}")
    if reference_calib_indices is not None:
        if isinstance(reference_calib_indices, (str, os.PathLike)):
            calib = load_calib_indices(reference_calib_indices, num_train=int(num_train))
        else:
            calib = _validate_indices(reference_calib_indices, int(num_train), "reference_calib_indices")
    else:
        if not isinstance(num_calib, (int, np.integer)) or not 0 < num_calib < num_train:
            raise ConfigError(f"num_calib must be in [1, num_train={num_train}), got {num_calib!r}")
        perm = np.random.default_rng(seed).permutation(int(num_train))
        calib = np.sort(perm[: int(num_calib)]).astype(np.int64)
    fit = np.setdiff1d(np.arange(int(num_train), dtype=np.int64), calib, assume_unique=True)
    if fit.size == 0:
        raise ConfigError("calibration indices cover the whole train split: nothing left to fit the backbone on")
    return {"fit": fit, "calib": calib}


def write_archive_subset(source: str | os.PathLike, out: str | os.PathLike, *,
                         per_class: dict[str, int]) -> dict[str, int]:
    """Copy the first ``per_class[split]`` images of every class (sorted path order) of an image-folder archive into
    a new ``.tgz`` with the same layout and the original file bytes (no re-encoding).

    The output is byte-reproducible (sorted members, zeroed mtimes/owners, gzip mtime 0) and written atomically.
    Returns the number of images written per split. Used to make the package's offline demo sample.
    """
    import gzip

    source, out = Path(source), Path(out)
    for split, n in per_class.items():
        if split not in _SPLITS or not isinstance(n, int) or n < 1:
            raise ConfigError(f"per_class must map 'train'/'test' to positive ints, got {per_class!r}")
    if not source.is_file():
        raise DataSourceError(f"{source}: archive not found; {_OPTIONS}")
    picked = dict(_read_members(source, tuple(per_class)))
    keep: list[str] = []
    counts: dict[str, int] = {s: 0 for s in per_class}
    seen: dict[tuple[str, str], int] = {}
    for name in sorted(picked):
        split, cls, _ = name.split("/")
        k = seen.get((split, cls), 0)
        if k < per_class[split]:
            keep.append(name)
            seen[(split, cls)] = k + 1
            counts[split] += 1
    short = {key: n for key, n in seen.items() if n < per_class[key[0]]}
    if short:
        raise DataSourceError(f"{source}: too few images for the subset: {short}")

    def _add(tar: tarfile.TarFile, name: str, data: bytes | None) -> None:
        info = tarfile.TarInfo(name)
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        if data is None:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        else:
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

    with atomic_write(out, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                dirs_done: set[str] = set()
                for name in keep:
                    split, cls, _ = name.split("/")
                    for d in (split, f"{split}/{cls}"):
                        if d not in dirs_done:
                            _add(tar, d + "/", None)
                            dirs_done.add(d)
                    _add(tar, name, picked[name])
    return counts


# --------------------------------------------------------------------------------------------------- archives
def _read_members(path: Path, splits: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """``(split/class/file, bytes)`` of every image member of the given splits, after checking the archive is whole.

    tarfile treats a tar that ends early at a member boundary as complete, and a truncated gzip stream may just read
    short — either would silently give (and cache) a partial dataset. So the gzip stream is decompressed completely
    first (a missing end-of-stream raises), and the tar must end with its end-of-archive marker (two zero blocks).
    """
    import gzip

    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        out: list[tuple[str, bytes]] = []
        end = 0
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for m in tar:
                end = max(end, m.offset_data + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE)
                parts = m.name.lstrip("./").split("/")
                if not m.isfile() or len(parts) != 3 or parts[0] not in splits:
                    continue
                if not parts[2].lower().endswith(_IMAGE_SUFFIXES):
                    continue
                fh = tar.extractfile(m)
                if fh is not None:
                    out.append(("/".join(parts), fh.read()))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataSourceError(f"{path}: corrupt or truncated archive ({type(e).__name__}: {e})") from None
    marker = raw[end:end + 2 * tarfile.BLOCKSIZE]
    if len(marker) < 2 * tarfile.BLOCKSIZE or any(marker):
        raise DataSourceError(f"{path}: corrupt or truncated archive (no end-of-archive marker after the last member "
                              f"at byte {end})")
    return out


def _decode_archive(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from PIL import Image, UnidentifiedImageError

    entries = [(name, name.split("/")[1], blob) for name, blob in _read_members(path, (split,))]
    if not entries:
        raise DataSourceError(f"{path}: no images under '{split}/<class>/' in the archive (expected layout "
                              f"<split>/<class>/<image>.jpg)")
    entries.sort(key=lambda e: e[0])
    classes = tuple(sorted({c for _, c, _ in entries}))
    index = {c: i for i, c in enumerate(classes)}
    first = _decode_one(entries[0][2], entries[0][0], path, Image, UnidentifiedImageError)
    images = np.empty((len(entries),) + first.shape, dtype=np.uint8)
    labels = np.empty(len(entries), dtype=np.int64)
    for k, (name, cls, data) in enumerate(entries):
        arr = first if k == 0 else _decode_one(data, name, path, Image, UnidentifiedImageError)
        if arr.shape != first.shape:
            raise DataSourceError(f"{path}: {name} is {arr.shape[1]}×{arr.shape[2]}, others are "
                                  f"{first.shape[1]}×{first.shape[2]}; an archive split must hold same-size images")
        images[k] = arr
        labels[k] = index[cls]
    return images, labels, classes


def _decode_one(data: bytes, name: str, path: Path, Image, UnidentifiedImageError) -> np.ndarray:  # noqa: N803
    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataSourceError(f"{path}: member {name} is not a readable image ({type(e).__name__}: {e})") from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


# --------------------------------------------------------------------------------------------------- torchvision
def _load_torchvision_cifar(root: Path, dataset: str, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision import datasets

    cls = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
    try:
        ds = cls(root=str(root), train=(split == "train"), download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise DataSourceError(f"{dataset} not found or corrupted under {root} ({e}); {_OPTIONS}") from None
    except OSError as e:
        raise DataSourceError(f"{dataset}: could not read/download into {root} ({e}); {_OPTIONS}") from None
    images = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2))
    return images, np.asarray(ds.targets, dtype=np.int64)


def _load_image_folder(root: Path, dataset: str, split: str, image_size: int,
                       limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``<root>/<split>/<class>/*`` (ImageNet: test split = ``val``), resized + centre-cropped to ``image_size``."""
    if not root.is_dir():
        raise DataSourceError(f"{root}: not an archive or a directory; {_OPTIONS}")
    sub = "val" if (dataset == "imagenet" and split == "test" and not (root / "test").is_dir()) else split
    if not (root / sub).is_dir():
        raise DataSourceError(f"{root}: no {dataset} data found (no '{sub}/<class>/' folders, no torchvision files); "
                              f"{_OPTIONS}")
    from PIL import Image
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import CenterCrop, Compose, PILToTensor, Resize

    tf = Compose([Resize(image_size), CenterCrop(image_size), PILToTensor()])
    ds = ImageFolder(str(root / sub), transform=tf, loader=lambda p: Image.open(p).convert("RGB"))
    if len(ds) == 0:
        raise DataSourceError(f"{root / sub}: no images found; {_OPTIONS}")
    # With a limit, take evenly spaced images in sorted order so every class is represented (folders are per class).
    n = len(ds) if limit is None else min(limit, len(ds))
    picks = np.linspace(0, len(ds) - 1, n).round().astype(np.int64) if n < len(ds) else np.arange(n)
    images = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    for k, i in enumerate(picks.tolist()):
        try:
            img, y = ds[i]
        except OSError as e:
            raise DataSourceError(f"{ds.samples[i][0]}: unreadable image ({e})") from None
        images[k] = img.numpy()
        labels[k] = y
    return images, labels
