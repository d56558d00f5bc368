"""Outcome-table loader (adainf_env.tables.outcomes): round trip, safety, corruption, metadata checks, reference layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adainf_env import load_table, save_table
from adainf_env.errors import AdaInfError, TableFormatError, TableMismatchError, UnsafeFileError
from adainf_env.plans import masks_from_codes
from adainf_env.tables.outcomes import OutcomeTable, default_meta


def _table(n: int = 6, b: int = 3, seed: int = 0, **meta) -> OutcomeTable:
    rng = np.random.default_rng(seed)
    p = 1 << b
    masks = masks_from_codes(np.arange(p), b)
    macs = 10 + masks.astype(np.int64) @ np.array([100, 200, 300][:b] + [50] * max(0, b - 3))
    m = default_meta(backbone="tiny", checkpoint_sha256="c0ffee", dataset="toy", split="calib", num_classes=4,
                     full_macs=int(macs.max()), plan_space="all")
    m.update(meta)
    return OutcomeTable(
        pred=rng.integers(0, 4, (n, p)).astype(np.uint8),
        loss=rng.random((n, p)).astype(np.float32) * 3,
        conf=rng.random((n, p)).astype(np.float32),
        features=rng.standard_normal((n, 5)).astype(np.float32),
        label=rng.integers(0, 4, n).astype(np.int64),
        sample_index=np.arange(n, dtype=np.int64) * 2,
        plan_masks=masks,
        plan_macs=macs.astype(np.int64),
        meta=m,
    )


def _raw(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _write_raw(path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def test_round_trip(tmp_path):
    t = _table()
    path = save_table(t, tmp_path / "t.npz")
    back = load_table(path)
    for k in ("pred", "loss", "conf", "features", "label", "sample_index", "plan_masks", "plan_macs"):
        np.testing.assert_array_equal(getattr(back, k), getattr(t, k))
        assert getattr(back, k).dtype == getattr(t, k).dtype
    assert back.meta["content_sha256"] == t.content_hash()
    assert back.meta["backbone"] == "tiny" and back.full_macs == t.full_macs
    np.testing.assert_allclose(back.plan_cost()[-1], 1.0)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


class _Payload:
    """Unpickling this object creates a marker file (stands in for arbitrary code execution)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_bearing_npz_is_refused_without_running_payload(tmp_path):
    marker = tmp_path / "PWNED"
    arrays = _raw(save_table(_table(), tmp_path / "ok.npz"))
    arrays["features"] = np.array([_Payload(str(marker))] * 6, dtype=object)
    evil = tmp_path / "evil.npz"
    with open(evil, "wb") as fh:
        np.savez(fh, **arrays)  # object arrays are pickled inside the .npz
    # Sanity: the payload really runs when unpickled — so the assertion below is meaningful.
    probe = tmp_path / "probe"
    import pickle

    pickle.loads(pickle.dumps(_Payload(str(probe)))).close()
    assert probe.exists()
    with pytest.raises(UnsafeFileError, match="pickle"):
        load_table(evil)
    assert not marker.exists()
    # The reference layout too.
    ref_like = tmp_path / "table_test.npz"
    with open(ref_like, "wb") as fh:
        np.savez(fh, pred=np.zeros((2, 8), np.uint8), loss=np.zeros((2, 8), np.float16),
                 conf=np.zeros((2, 8), np.uint8), stem_feat=np.array([_Payload(str(marker))] * 2, dtype=object),
                 label=np.zeros(2, np.uint8))
    with pytest.raises(UnsafeFileError):
        load_table(ref_like)
    assert not marker.exists()
    # A bare pickle stream named .npz.
    raw_pickle = tmp_path / "raw.npz"
    raw_pickle.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(UnsafeFileError):
        load_table(raw_pickle)
    assert not marker.exists()


def test_truncated_and_missing_files(tmp_path):
    path = save_table(_table(n=50), tmp_path / "t.npz")
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(TableFormatError):
            load_table(bad)
    with pytest.raises(TableFormatError, match="no such file"):
        load_table(tmp_path / "absent.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(TableFormatError):
        load_table(tmp_path / "empty.npz")


def _resave(tmp_path, name, mutate, rehash=True):
    """Write a table's arrays after ``mutate(arrays, meta)``, with a fresh content hash unless told otherwise."""
    from adainf_env.fileio import sha256_arrays

    arrays = _raw(save_table(_table(), tmp_path / "base.npz"))
    meta = json.loads(str(arrays.pop("meta_json")))
    mutate(arrays, meta)
    if rehash:
        meta["content_sha256"] = sha256_arrays({k: v for k, v in arrays.items() if k != "plan_latency"})
    arrays["meta_json"] = np.array(json.dumps(meta))
    path = tmp_path / name
    _write_raw(path, arrays)
    return path


def test_nan_wrong_shapes_missing_arrays(tmp_path):
    def nan_loss(a, m):
        a["loss"] = a["loss"].copy()
        a["loss"][1, 2] = np.nan

    with pytest.raises(TableFormatError, match="NaN"):
        load_table(_resave(tmp_path, "nan.npz", nan_loss))
    with pytest.raises(TableFormatError, match="conf"):
        load_table(_resave(tmp_path, "conf.npz", lambda a, m: a.__setitem__("conf", a["conf"][:, :3])))
    with pytest.raises(TableFormatError, match="label"):
        load_table(_resave(tmp_path, "lab.npz", lambda a, m: a.__setitem__("label", a["label"][:2])))
    with pytest.raises(TableFormatError, match="plan_masks"):
        load_table(_resave(tmp_path, "pm.npz", lambda a, m: a.__setitem__("plan_masks", a["plan_masks"][:, :2]
                                                                             .astype(np.uint8))))
    with pytest.raises(TableFormatError, match="missing"):
        load_table(_resave(tmp_path, "miss.npz", lambda a, m: a.pop("features")))
    with pytest.raises(TableFormatError, match="format_version"):
        load_table(_resave(tmp_path, "ver.npz", lambda a, m: m.__setitem__("format_version", 99)))
    with pytest.raises(TableFormatError, match="num_classes"):
        load_table(_resave(tmp_path, "cls.npz", lambda a, m: m.__setitem__("num_classes", 2)))


def test_content_hash_detects_tampering(tmp_path):
    def flip(a, m):
        a["pred"] = a["pred"].copy()
        a["pred"][0, 0] = (a["pred"][0, 0] + 1) % 4

    with pytest.raises(TableFormatError, match="content hash"):
        load_table(_resave(tmp_path, "tampered.npz", flip, rehash=False))
    assert load_table(_resave(tmp_path, "rehashed.npz", flip)).pred[0, 0] is not None


@pytest.mark.parametrize(
    "kw",
    [
        {"backbone": "resnet18_cifar"},
        {"checkpoint_sha256": "deadbeef"},
        {"dataset": "cifar10"},
        {"split": "test"},
        {"plan_masks": masks_from_codes(np.arange(4), 2)},
        {"plan_masks": masks_from_codes(np.arange(8)[::-1], 3)},
    ],
)
def test_metadata_mismatch_is_refused(tmp_path, kw):
    path = save_table(_table(), tmp_path / "t.npz")
    with pytest.raises(TableMismatchError):
        load_table(path, **kw)
    load_table(path, backbone="tiny", checkpoint_sha256="c0ffee", dataset="toy", split="calib",
               plan_masks=masks_from_codes(np.arange(8), 3))


def test_reference_tables_load_with_256_plans_and_macs(reference_dir, calib_table, test_table):
    summary = json.loads((reference_dir / "summary.json").read_text())
    for t, split, n in ((calib_table, "calib", 10_000), (test_table, "test", 10_000)):
        assert t.num_plans == 256 and t.num_blocks == 8 and t.num_samples == n
        assert t.meta["split"] == split and t.meta["backbone"] == "resnet18_cifar"
        assert t.full_macs == 555_422_720 and t.plan_macs[0] == 8_066_048 and t.plan_macs[255] == t.full_macs
        np.testing.assert_array_equal(t.plan_masks, masks_from_codes(np.arange(256), 8))
        acc = t.accuracy_by_plan()
        np.testing.assert_allclose(acc, summary[f"{split}_acc_by_plan"], atol=1e-4)
        assert 0 <= t.conf.min() and t.conf.max() <= 1 and t.features.shape == (n, 64)
    np.testing.assert_array_equal(calib_table.sample_index, np.load(reference_dir / "calib_indices.npy"))
    np.testing.assert_array_equal(test_table.sample_index, np.arange(10_000))
    assert abs(test_table.accuracy_by_plan()[255] - 0.9111) < 1e-4


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=600))
def test_random_bytes_raise_only_adainf_errors(tmp_path, data):
    path = tmp_path / "garbage.npz"
    path.write_bytes(data)
    with pytest.raises(AdaInfError):
        load_table(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(min_value=0, max_value=10**9), byte=st.integers(min_value=0, max_value=255),
       cut=st.booleans())
def test_corrupted_valid_file_raises_only_adainf_errors(tmp_path, pos, byte, cut):
    src = tmp_path / "src.npz"
    if not src.exists():
        save_table(_table(), src)
    data = bytearray(src.read_bytes())
    i = pos % len(data)
    if cut:
        data = data[:i]
    else:
        if data[i] == byte:
            return
        data[i] = byte
    path = tmp_path / "corrupt.npz"
    path.write_bytes(bytes(data))
    try:
        t = load_table(path)
    except AdaInfError:
        return
    # A flip the zip layer and hash cannot see (e.g. in an unused header field) must leave the content intact.
    np.testing.assert_array_equal(t.pred, _table().pred)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=st.dictionaries(
    st.sampled_from(["pred", "loss", "conf", "stem_feat", "label", "features", "sample_index", "plan_masks",
                     "plan_macs", "meta_json"]),
    st.sampled_from([np.zeros(()), np.zeros((0,)), np.zeros((3,)), np.zeros((2, 8)), np.zeros((2, 256), np.uint8),
                     np.ones((2, 3), bool), np.array("x"), np.array('{"format_version": 1}')]),
    min_size=1))
def test_wrongly_shaped_archives_raise_only_adainf_errors(tmp_path, arrays):
    path = tmp_path / "table_test.npz"
    _write_raw(path, arrays)
    with pytest.raises(AdaInfError):
        load_table(path)


_MACS = {"stem": 1769472, "fc": 5120, "blocks": [[75497472, 0], [75497472, 0], [56623104, 2097152], [75497472, 0],
                                                [56623104, 2097152], [75497472, 0], [56623104, 2097152], [75497472, 0]]}


def _sidecar(directory, **changes) -> dict:
    """A valid ``table_meta.json`` for a made-up 8-block, 3-class table in the reference layout, with ``changes``."""
    meta = {"format_version": 1, "backbone": "my_net", "dataset": "my_data", "classes": ["a", "b", "c"],
            "num_blocks": 8, "plan_space": "all", "cost_unit": "macs", "macs": _MACS, "checkpoint_sha256": None,
            "splits": {"test": {"file": "table_test.npz", "rows": 3}}}
    meta.update(changes)
    (directory / "table_meta.json").write_text(json.dumps(meta))
    return meta


def _minimal_reference_arrays(n: int = 3, plans: int = 256) -> dict[str, np.ndarray]:
    return {"pred": np.zeros((n, plans), np.uint8), "loss": np.ones((n, plans), np.float16),
            "conf": np.full((n, plans), 255, np.uint8), "stem_feat": np.zeros((n, 64), np.float16),
            "label": np.arange(n, dtype=np.uint8) % 3}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=st.dictionaries(
    st.sampled_from(["pred", "loss", "conf", "stem_feat", "label"]),
    st.sampled_from([np.zeros(()), np.zeros((0,)), np.zeros((2,)), np.zeros((3,), np.uint8), np.zeros((2, 8)),
                     np.zeros((2, 256), np.uint8), np.full((2, 256), np.nan, np.float16), np.zeros((2, 64)),
                     np.zeros((0, 256), np.uint8), np.array("x")]),
    min_size=5))
def test_reference_layout_garbage_raises_only_adainf_errors(tmp_path, arrays):
    _sidecar(tmp_path, splits={"test": {"file": "table_test.npz"}})
    path = tmp_path / "table_test.npz"
    _write_raw(path, arrays)
    try:
        t = load_table(path)
    except AdaInfError:
        return
    assert t.num_plans == 256  # only a consistent combination may load


def test_reference_layout_is_labelled_by_its_metadata(tmp_path):
    _sidecar(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"macs": _MACS}))
    path = tmp_path / "table_test.npz"
    _write_raw(path, _minimal_reference_arrays())
    t = load_table(path, split="test", backbone="my_net", dataset="my_data")
    assert t.num_plans == 256 and t.full_macs == 555_422_720 and t.conf.max() == 1.0
    assert t.num_classes == 3 and t.meta["classes"] == ["a", "b", "c"] and t.meta["checkpoint_sha256"] is None
    with pytest.raises(TableMismatchError):
        load_table(path, backbone="resnet18_cifar")  # never stamped as the reference any more
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(TableFormatError, match="summary.json"):
        load_table(path)
    (tmp_path / "summary.json").write_text(json.dumps({"macs": {**_MACS, "fc": 1}}))
    with pytest.raises(TableFormatError, match="MACs disagree"):
        load_table(path)


def test_reference_layout_without_metadata_is_refused(tmp_path):
    path = tmp_path / "table_test.npz"
    _write_raw(path, _minimal_reference_arrays())
    (tmp_path / "summary.json").write_text(json.dumps({"macs": _MACS}))
    with pytest.raises(TableFormatError, match="table_meta.json"):
        load_table(path)


@pytest.mark.parametrize("changes, match", [
    ({"num_blocks": 7, "macs": {**_MACS, "blocks": _MACS["blocks"][:7]}}, "2\\^7"),
    ({"classes": ["a", "b"]}, "num_classes"),
    ({"classes": ["a", "a", "b"]}, "distinct"),
    ({"backbone": ""}, "backbone"),
    ({"dataset": None}, "dataset"),
    ({"plan_space": "structured_subset"}, "plan_space"),
    ({"cost_unit": "latency"}, "cost_unit"),
    ({"macs": {**_MACS, "blocks": _MACS["blocks"][:5]}}, "macs.blocks"),
    ({"format_version": 2}, "format_version"),
    ({"checkpoint_sha256": "abc"}, "checkpoint_sha256"),
    ({"splits": {"test": {"file": "table_test.npz", "rows": 4}}}, "rows"),
    ({"splits": {"calib": {"file": "table_calib.npz"}}}, "not listed"),
    ({"splits": {"test": {"file": "table_test.npz", "arrays_sha256": "0" * 64}}}, "arrays differ"),
    ({"splits": {"test": {"file": "table_test.npz", "content_sha256": "0" * 64}}}, "content hash"),
    ({"splits": {"test": {"file": "table_test.npz", "sample_index_file": "idx.npy"}}}, "sample index"),
])
def test_inconsistent_reference_metadata_is_refused(tmp_path, changes, match):
    _sidecar(tmp_path, **changes)
    path = tmp_path / "table_test.npz"
    _write_raw(path, _minimal_reference_arrays())
    with pytest.raises(TableFormatError, match=match):
        load_table(path)


def test_published_reference_recognised_by_content_without_metadata(tmp_path):
    """A copy of a shipped reference table (as in ../shared/reference, which has no table_meta.json) is recognised
    by its array hash; the same layout with one prediction changed is refused."""
    from adainf_env.tables.reference import load_reference_table, reference_table_path

    copy = tmp_path / "renamed.npz"
    copy.write_bytes(reference_table_path("test").read_bytes())
    t = load_table(copy)
    assert t.meta["split"] == "test" and t.meta["backbone"] == "resnet18_cifar" and t.meta["dataset"] == "cifar10"
    assert t.content_hash() == load_reference_table("test").content_hash()
    arrays = _raw(copy)
    arrays["pred"][0, 0] = (arrays["pred"][0, 0] + 1) % 10
    tampered = tmp_path / "table_test.npz"
    _write_raw(tampered, arrays)
    with pytest.raises(TableFormatError, match="table_meta.json"):
        load_table(tampered)


def test_repr_is_one_line_without_arrays(tmp_path):
    t = load_table(save_table(_table(n=500), tmp_path / "t.npz"))
    text = repr(t)
    assert text == str(t) and "\n" not in text and len(text) < 300
    for part in ("samples=500", "plans=8", "blocks=3", "backbone='tiny'", "dataset='toy'", "split='calib'",
                 "plan_space='all'", f"content_sha256='{t.content_hash()[:12]}"):
        assert part in text, part
    assert "array(" not in text and "[" not in text
    fresh = _table(n=5)  # never saved: the hash is computed, not read from metadata
    assert fresh.content_hash()[:12] in repr(fresh)


def _set(key, fn):
    def mutate(a, m):
        a[key] = fn(a[key].copy())
    return mutate


@pytest.mark.parametrize("name, mutate, match", [
    ("neg_label", _set("label", lambda x: np.where(np.arange(x.size) == 0, -1, x)), "label contains a negative"),
    ("neg_pred", _set("pred", lambda x: x.astype(np.int64) - 1), "pred contains a negative"),
    ("big_pred", _set("pred", lambda x: np.full_like(x, 7)), r"class ≥ num_classes=4 \(largest: pred 7"),
    ("float_index", _set("sample_index", lambda x: x.astype(np.float64) + 0.5), "sample_index must be an integer"),
    ("dup_index", _set("sample_index", lambda x: np.zeros_like(x)), "sample_index has 5 duplicate"),
    ("neg_index", _set("sample_index", lambda x: x - 3), "sample_index contains a negative"),
    ("float_macs", _set("plan_macs", lambda x: x.astype(np.float64)), "plan_macs must be an integer"),
    ("macs_lots", lambda a, m: m.__setitem__("full_macs", "lots"), "'full_macs' must be an integer > 0.*'lots'"),
    ("macs_bool", lambda a, m: m.__setitem__("full_macs", True), "'full_macs' must be an integer"),
    ("classes_ten", lambda a, m: m.__setitem__("num_classes", "ten"), "'num_classes' must be an integer.*'ten'"),
    ("classes_zero", lambda a, m: m.__setitem__("num_classes", 0), "'num_classes' must be an integer ≥ 1"),
    ("class_names", lambda a, m: m.__setitem__("classes", [1, 2, 3, 4]), "'classes' must be a list of 4"),
    ("backbone_num", lambda a, m: m.__setitem__("backbone", 18), "'backbone' must be str, got 18"),
    ("split_list", lambda a, m: m.__setitem__("split", ["calib"]), "'split' must be str"),
])
def test_values_and_typed_metadata_are_validated(tmp_path, name, mutate, match):
    """Values, not only shapes: class indices in range, sample_index integral, non-negative and unique, metadata
    fields typed — each a TableFormatError naming the file and the field, never a raw numpy/TypeError."""
    path = _resave(tmp_path, f"{name}.npz", mutate)
    with pytest.raises(TableFormatError, match=match) as e:
        load_table(path)
    assert str(path) in str(e.value)


def test_metadata_that_is_not_an_object_is_refused_under_python_O(tmp_path):
    """A JSON list as metadata: TableFormatError also when asserts are stripped (python -O)."""
    import subprocess
    import sys

    path = _resave(tmp_path, "list.npz", lambda a, m: None)
    arrays = _raw(path)
    arrays["meta_json"] = np.array(json.dumps([1, 2]))
    _write_raw(path, arrays)
    code = ("import sys; from adainf_env import load_table; from adainf_env.errors import TableFormatError\n"
            f"try:\n    load_table({str(path)!r})\nexcept TableFormatError as e:\n    print('OK', e); sys.exit(0)\n"
            "sys.exit(1)")
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "meta_json is not a JSON object" in out.stdout, out.stderr[-500:]
