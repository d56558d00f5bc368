"""adainf_env.data: archive loader + decode cache, torchvision fallback errors, seeded and reference splits."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from adainf_env import data
from adainf_env.data import demo_archive_path, load_archive, load_calib_indices, load_images, make_splits
from adainf_env.errors import ConfigError, DataSourceError, UnsafeFileError

CLASSES = ("zebra", "ant", "cow")  # deliberately unsorted: label = position in the *sorted* list


def _png(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="PNG")  # lossless: decoded pixels are known exactly
    return buf.getvalue()


def _make_archive(path: Path, per_class: int = 3, size: int = 8) -> dict[str, list[tuple[str, int]]]:
    """A tiny image-folder archive; returns, per split, the expected (member, red value) in sorted path order."""
    expected: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    members = []
    for split in ("train", "test"):
        for ci, cls in enumerate(CLASSES):
            for j in range(per_class):
                red = (ci * 40 + j * 7 + (split == "test") * 3) % 256
                members.append((f"{split}/{cls}/{j:04d}.png", _png((red, 10, 20), size)))
    import random

    random.Random(0).shuffle(members)  # archive order must not matter
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    for name, blob in sorted(members):
        expected[name.split("/")[0]].append((name, np.asarray(Image.open(io.BytesIO(blob)))[0, 0, 0]))
    return expected


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("ADAINF_CACHE", str(d))
    return d


def _cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_archive_layout_labels_order_and_cache(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arc = tmp_path / "tiny.tgz"
    expected = _make_archive(arc)
    for split in ("train", "test"):
        images, labels = load_images(arc, dataset="imagefolder", split=split)
        assert images.dtype == np.uint8 and images.shape == (9, 3, 8, 8)
        assert labels.dtype == np.int64
        names = [n for n, _ in expected[split]]
        sorted_classes = sorted(CLASSES)
        assert labels.tolist() == [sorted_classes.index(n.split("/")[1]) for n in names]
        assert images[:, 0, 0, 0].tolist() == [int(r) for _, r in expected[split]]
    files = _cache_files(cache)
    assert len(files) == 2 and all(f.suffix == ".npz" for f in files)
    from adainf_env.fileio import sha256_file

    assert all(f.name.startswith(sha256_file(arc)) for f in files)  # keyed by content hash

    # Second call is served from the cache: decoding must not run again.
    monkeypatch.setattr(data, "_decode_archive", lambda *a, **k: pytest.fail("decoded again despite cache"))
    images2, labels2 = load_images(arc, dataset="imagefolder", split="train")
    assert labels2.tolist() == load_archive(arc, split="train", dataset="imagefolder")[1].tolist()
    assert load_archive(arc, split="train", dataset="imagefolder")[2] == tuple(sorted(CLASSES))


def test_cifar10_archive_needs_ten_classes(tmp_path: Path, cache: Path) -> None:
    arc = tmp_path / "tiny.tgz"
    _make_archive(arc)
    with pytest.raises(DataSourceError, match="3 class folders, cifar10 has 10"):
        load_images(arc, dataset="cifar10", split="test")
    assert _cache_files(cache) == []


def test_truncated_and_garbage_archives_raise_and_leave_no_cache(tmp_path: Path, cache: Path) -> None:
    arc = tmp_path / "tiny.tgz"
    _make_archive(arc, per_class=20)
    blob = arc.read_bytes()
    trunc = tmp_path / "trunc.tgz"
    trunc.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataSourceError, match="corrupt or truncated"):
        load_images(trunc, dataset="imagefolder", split="test")
    garbage = tmp_path / "garbage.tgz"
    garbage.write_bytes(b"\x1f\x8b" + os.urandom(500))
    with pytest.raises(DataSourceError):
        load_images(garbage, dataset="imagefolder", split="train")
    assert _cache_files(cache) == []  # neither a cache nor a temp file left behind


def test_corrupt_image_member(tmp_path: Path, cache: Path) -> None:
    arc = tmp_path / "bad.tgz"
    with tarfile.open(arc, "w:gz") as tar:
        for name, blob in [("train/a/0.png", _png((1, 2, 3))), ("train/b/0.jpg", b"not a jpeg at all")]:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(DataSourceError, match="train/b/0.jpg"):
        load_images(arc, dataset="imagefolder", split="train")
    assert _cache_files(cache) == []


def test_no_source_names_the_options(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(DataSourceError) as ei:
        load_images(None, dataset="cifar10", split="train")
    msg = str(ei.value)
    assert "archive" in msg and "download=True" in msg and "root" in msg
    with pytest.raises(DataSourceError, match="download=True"):  # empty torchvision root, download not allowed
        load_images(tmp_path / "empty_root", dataset="cifar100", split="test")
    with pytest.raises(DataSourceError, match="archive not found"):
        load_images(tmp_path / "missing.tgz")
    with pytest.raises(DataSourceError):
        load_images(tmp_path / "nothing_here", dataset="imagenet", split="test")
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_images(tmp_path, dataset="mnist")
    with pytest.raises(ConfigError, match="unknown split"):
        load_images(tmp_path, split="calib")


def test_image_folder_directory(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for cls in ("b_cls", "a_cls"):
            d = tmp_path / "inet" / split / cls
            d.mkdir(parents=True)
            for j in range(2):
                Image.new("RGB", (40 + j * 10, 30), (200 if cls == "b_cls" else 5, 0, 0)).save(d / f"{j}.jpg")
    images, labels = load_images(tmp_path / "inet", dataset="imagenet", split="test", image_size=24)
    assert images.shape == (4, 3, 24, 24) and labels.tolist() == [0, 0, 1, 1]
    assert images[2, 0].mean() > 150 > images[0, 0].mean()
    images, labels = load_images(tmp_path / "inet", dataset="imagenet", split="train", image_size=16, limit=2)
    assert images.shape == (2, 3, 16, 16) and labels.tolist() == [0, 1]  # evenly spaced: both classes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 0.95), noise=st.binary(min_size=0, max_size=64))
def test_damaged_archives_only_raise_data_source_error(tmp_path: Path, cut: float, noise: bytes) -> None:
    base = tmp_path / "base.tgz"
    if not base.exists():
        _make_archive(base, per_class=4)
    blob = base.read_bytes()
    bad = tmp_path / "damaged.tgz"
    bad.write_bytes(blob[: int(len(blob) * cut)] + noise)
    os.environ["ADAINF_CACHE"] = str(tmp_path / "hcache")
    try:
        with pytest.raises(DataSourceError):
            load_images(bad, dataset="imagefolder", split="test")
    finally:
        del os.environ["ADAINF_CACHE"]
    assert _cache_files(tmp_path / "hcache") == []


def test_make_splits_seeded_disjoint_and_complete() -> None:
    a = make_splits(1000, seed=3, num_calib=200)
    b = make_splits(1000, seed=3, num_calib=200)
    c = make_splits(1000, seed=4, num_calib=200)
    assert np.array_equal(a["calib"], b["calib"]) and np.array_equal(a["fit"], b["fit"])
    assert not np.array_equal(a["calib"], c["calib"])
    assert a["calib"].size == 200 and a["fit"].size == 800
    assert np.intersect1d(a["fit"], a["calib"]).size == 0
    assert np.array_equal(np.sort(np.concatenate([a["fit"], a["calib"]])), np.arange(1000))
    assert np.all(np.diff(a["calib"]) > 0) and a["calib"].dtype == np.int64
    for bad in [dict(num_train=1, seed=0), dict(num_train=10, seed=0, num_calib=10), dict(num_train=10, seed=0,
                                                                                           num_calib=0)]:
        with pytest.raises(ConfigError):
            make_splits(**bad)


def test_make_splits_reference_option(tmp_path: Path) -> None:
    s = make_splits(10, seed=0, reference_calib_indices=np.array([7, 2, 5]))
    assert s["calib"].tolist() == [2, 5, 7] and s["fit"].tolist() == [0, 1, 3, 4, 6, 8, 9]
    with pytest.raises(ConfigError, match="out of range"):
        make_splits(10, seed=0, reference_calib_indices=np.array([3, 10]))
    with pytest.raises(ConfigError, match="duplicates"):
        make_splits(10, seed=0, reference_calib_indices=np.array([3, 3]))
    evil = tmp_path / "evil.npy"
    np.save(evil, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UnsafeFileError):
        load_calib_indices(evil)
    with pytest.raises(DataSourceError, match="not found"):
        load_calib_indices(tmp_path / "nope.npy")
    junk = tmp_path / "junk.npy"
    junk.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises((DataSourceError, UnsafeFileError)):
        load_calib_indices(junk)


def test_reference_split_reproduced(reference_dir: Path) -> None:
    s = make_splits(50_000, seed=123, reference_calib_indices=reference_dir / "calib_indices.npy")
    ref = np.load(reference_dir / "calib_indices.npy", allow_pickle=False)
    assert np.array_equal(s["calib"], np.sort(ref)) and s["fit"].size == 40_000
    assert np.intersect1d(s["fit"], ref).size == 0


def test_real_cifar_archive_test_split(cifar_archive: Path, tmp_path_factory: pytest.TempPathFactory,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Session-wide cache dir: test_backbones reuses the decoded split instead of decoding 10k JPGs again.
    monkeypatch.setenv("ADAINF_CACHE", str(tmp_path_factory.getbasetemp() / "adainf_cache"))
    images, labels = load_images(cifar_archive, dataset="cifar10", split="test")
    assert images.shape == (10_000, 3, 32, 32) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    assert labels[:1000].max() == 0 and labels[-1] == 9  # sorted path order: airplane first, truck last
    assert 80 < images.mean() < 160  # real photos, not blanks


def test_demo_archive_is_a_real_cifar_subset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = demo_archive_path()
    assert path.is_file(), "the package must ship adainf_env/demo_data/cifar10_demo.tgz (experiments/make_demo_data.py)"
    assert path.stat().st_size < 5_000_000
    monkeypatch.setenv("ADAINF_CACHE", str(tmp_path / "c"))
    tr_x, tr_y = load_images(path, dataset="cifar10", split="train")
    te_x, te_y = load_images(path, dataset="cifar10", split="test")
    assert tr_x.shape[1:] == (3, 32, 32) and te_x.shape[1:] == (3, 32, 32)
    assert len(set(np.bincount(tr_y).tolist())) == 1 and np.bincount(tr_y).size == 10
    assert len(set(np.bincount(te_y).tolist())) == 1 and np.bincount(te_y).size == 10
    assert tr_x.std() > 30  # real, varied images


def test_demo_archive_matches_full_archive(cifar_archive: Path, tmp_path_factory: pytest.TempPathFactory,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAINF_CACHE", str(tmp_path_factory.getbasetemp() / "adainf_cache"))
    full_x, full_y = load_images(cifar_archive, dataset="cifar10", split="test")
    demo_x, demo_y = load_images(demo_archive_path(), dataset="cifar10", split="test")
    per = demo_x.shape[0] // 10
    idx = np.concatenate([np.flatnonzero(full_y == c)[:per] for c in range(10)])  # first `per` of each class
    assert np.array_equal(demo_y, full_y[idx]) and np.array_equal(demo_x, full_x[idx])  # same JPEG bytes
