"""Table builder: prefix-sharing DFS equals one forward per plan; subset plan spaces; resume; reference agreement."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _tiny_backbones import TinyResNet, TinyTokenNet
from adainf_env import load_table, save_table
from adainf_env.backbones import load_backbone
from adainf_env.data import demo_archive_path, load_images
from adainf_env.errors import AdaInfError, ConfigError, TableFormatError, TableMismatchError
from adainf_env.plans import all_plans, codes_from_masks
from adainf_env.tables.builder import (
    build_table,
    evaluate_plans,
    evaluate_plans_per_plan,
    structured_plan_subset,
)


def _data(n: int, num_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), rng.integers(0, num_classes, n)


def _naive_table(model, imgs, labels, masks, batch_size):
    outs = []
    for s in range(0, len(imgs), batch_size):
        x = torch.from_numpy(imgs[s:s + batch_size]).contiguous(memory_format=torch.channels_last)
        outs.append(evaluate_plans_per_plan(model, x, torch.from_numpy(labels[s:s + batch_size]), masks))
    return [torch.cat([o[k] for o in outs]).numpy() for k in range(4)]


@pytest.mark.parametrize("model_cls", [TinyResNet, TinyTokenNet])
def test_prefix_sharing_equals_one_forward_per_plan(model_cls):
    model = model_cls()
    imgs, labels = _data(37, model.num_classes)
    table = build_table(model, imgs, labels, sample_index=np.arange(37) * 3, batch_size=16, progress=False)
    masks = all_plans(model.num_blocks)
    np.testing.assert_array_equal(table.plan_masks, masks)
    pred, loss, conf, feats = _naive_table(model, imgs, labels, masks, 16)
    np.testing.assert_array_equal(table.pred, pred)  # same ops on the same batches: bit-identical
    np.testing.assert_allclose(table.loss, loss, rtol=0, atol=1e-6)
    np.testing.assert_allclose(table.conf, conf, rtol=0, atol=1e-6)
    np.testing.assert_allclose(table.features, feats, rtol=0, atol=1e-6)
    assert table.pred.dtype == (np.uint8 if model.num_classes <= 256 else np.uint16)
    assert table.sample_index.tolist() == (np.arange(37) * 3).tolist()
    # Plans really differ (the test would be vacuous if skipping changed nothing).
    assert len({tuple(c) for c in table.pred.T}) > table.num_plans // 2
    # A CE / confidence consistent with the prediction: conf = max softmax ≥ 1/C and loss ≥ −log(conf).
    assert (table.conf >= 1.0 / model.num_classes - 1e-6).all()
    assert (table.loss >= -np.log(table.conf) - 1e-5).all()


def test_dfs_computes_each_prefix_once():
    model = TinyResNet(num_blocks=4)
    calls = [0] * 4
    for i, blk in enumerate(model.blocks):
        orig = blk.residual
        blk.residual = (lambda f, i: (lambda x: (calls.__setitem__(i, calls[i] + 1), f(x))[1]))(orig, i)
    imgs, labels = _data(8, model.num_classes)
    evaluate_plans(model, torch.from_numpy(imgs), torch.from_numpy(labels), all_plans(4))
    assert calls == [1, 2, 4, 8]  # 2^i prefixes reach block i; naive would run block i 8 times
    calls[:] = [0] * 4
    evaluate_plans(model, torch.from_numpy(imgs), torch.from_numpy(labels),
                   np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]], bool))
    assert calls == [1, 1, 1, 2]  # only prefixes leading to a requested plan are expanded


def test_subset_plan_space_matches_full_table_columns():
    model = TinyResNet(num_blocks=6, width=2)
    imgs, labels = _data(12, model.num_classes, seed=1)
    full = build_table(model, imgs, labels, sample_index=np.arange(12), batch_size=12, progress=False)
    sub_masks = structured_plan_subset(6, num_random=10, seed=3)
    sub = build_table(model, imgs, labels, sample_index=np.arange(12), plan_masks=sub_masks, batch_size=12,
                      progress=False, meta={"plan_space": "structured_subset(6, 10, seed=3)"})
    cols = codes_from_masks(sub_masks)
    np.testing.assert_array_equal(sub.pred, full.pred[:, cols])
    np.testing.assert_allclose(sub.loss, full.loss[:, cols], atol=1e-6)
    np.testing.assert_array_equal(sub.plan_macs, full.plan_macs[cols])
    assert sub.meta["plan_space"] == "structured_subset(6, 10, seed=3)" and full.meta["plan_space"] == "all"


def test_structured_plan_subset_is_documented_deterministic_and_unique():
    m = structured_plan_subset(15, num_random=100, seed=0)
    assert m.dtype == bool and m.shape[1] == 15
    assert len(np.unique(m, axis=0)) == len(m)
    # all-on, all-off, 14 prefixes, 14 suffixes, 15 leave-one-out, 15 single-block, 2 every-other = 62, minus 4
    # duplicates (prefix/suffix of length 1 = a single-block plan, of length 14 = a leave-one-out plan) = 58
    assert len(m) == 58 + 100
    assert m[0].all() and not m[1].any()
    assert m[2].tolist() == [True] + [False] * 14 and m[16].tolist() == [False] * 14 + [True]
    np.testing.assert_array_equal(m, structured_plan_subset(15, num_random=100, seed=0))
    other = structured_plan_subset(15, num_random=100, seed=1)
    np.testing.assert_array_equal(other[:58], m[:58])
    assert not np.array_equal(other[58:], m[58:])
    # random part spans the cost range, not just ~B/2 blocks
    k = m[58:].sum(1)
    assert k.min() <= 3 and k.max() >= 12
    assert len(structured_plan_subset(3, num_random=100)) == 8  # never more than 2^B
    with pytest.raises(ConfigError):
        structured_plan_subset(0, 5)
    with pytest.raises(ConfigError):
        structured_plan_subset(4, -1)


class _Kill(Exception):
    pass


def test_resume_after_interruption_gives_identical_table(tmp_path):
    model = TinyResNet(num_blocks=4)
    imgs, labels = _data(50, model.num_classes, seed=2)
    kw = dict(sample_index=np.arange(50), batch_size=8, progress=False, meta={"split": "test"})
    reference = build_table(model, imgs, labels, **kw)
    ckpt = tmp_path / "build.resume.npz"

    def kill_after_3(done, total):
        if done == 3:
            raise _Kill

    with pytest.raises(_Kill):
        build_table(model, imgs, labels, resume_path=ckpt, checkpoint_every=2, on_batch=kill_after_3, **kw)
    assert ckpt.is_file() and not list(tmp_path.glob(".*.tmp"))  # atomic: no temp files left behind
    seen = []
    resumed = build_table(model, imgs, labels, resume_path=ckpt, checkpoint_every=2,
                          on_batch=lambda d, t: seen.append(d), **kw)
    assert seen == [3, 4, 5, 6, 7]  # resumed after the last checkpoint (2 batches), not from scratch
    for k in ("pred", "loss", "conf", "features", "label", "sample_index", "plan_masks", "plan_macs"):
        np.testing.assert_array_equal(getattr(resumed, k), getattr(reference, k))
    assert resumed.content_hash() == reference.content_hash()

    # A checkpoint from other inputs is refused, not silently mixed in.
    with pytest.raises(TableMismatchError, match="resume checkpoint"):
        build_table(model, imgs, labels, resume_path=ckpt, **{**kw, "batch_size": 10})
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(TableFormatError):
        build_table(model, imgs, labels, resume_path=ckpt, **kw)


def test_saved_table_round_trips_with_metadata(tmp_path):
    model = TinyResNet()
    imgs, labels = _data(10, model.num_classes)
    t = build_table(model, imgs, labels, sample_index=np.arange(10), batch_size=4, progress=False,
                    meta={"checkpoint_sha256": "abc", "dataset": "toy", "split": "calib"}, float_dtype="float16")
    assert t.loss.dtype == np.float16 and t.conf.dtype == np.float16
    path = save_table(t, tmp_path / "t.npz")
    back = load_table(path, backbone="tiny_resnet", checkpoint_sha256="abc", dataset="toy", split="calib",
                      plan_masks=all_plans(4))
    np.testing.assert_array_equal(back.pred, t.pred)
    assert back.meta["full_macs"] == t.plan_macs.max() and back.meta["macs"]["blocks"] == t.meta["macs"]["blocks"]
    assert back.meta["num_classes"] == 5 and "torch" in back.meta["versions"]
    with pytest.raises(TableMismatchError):
        load_table(path, checkpoint_sha256="other")


def test_bad_inputs_raise_clear_errors():
    model = TinyResNet()
    imgs, labels = _data(6, model.num_classes)
    idx = np.arange(6)
    cases = [
        (dict(images=imgs.astype(np.float32)), "uint8"),
        (dict(images=imgs[:, :, :, 0]), r"\[N, C, H, W\]"),
        (dict(labels=labels[:5]), "labels"),
        (dict(labels=labels + 10), "labels must lie"),
        (dict(sample_index=idx[:3]), "sample_index"),
        (dict(plan_masks=np.ones((2, 4), bool)), "duplicate"),
        (dict(plan_masks=np.ones((2, 3), bool)), "B=4"),
        (dict(batch_size=0), "batch_size"),
        (dict(float_dtype="int8"), "float_dtype"),
        (dict(meta={"backbone": "resnet18_cifar"}), "backbone"),
    ]
    for override, msg in cases:
        kw = {**dict(images=imgs, labels=labels, sample_index=idx, progress=False), **override}
        with pytest.raises(ConfigError, match=msg):
            build_table(model, kw.pop("images"), kw.pop("labels"), **kw)
    big = TinyResNet(num_blocks=11, width=2)
    with pytest.raises(ConfigError, match="structured_plan_subset"):
        build_table(big, imgs, labels, sample_index=idx, progress=False)
    with pytest.raises(AdaInfError):
        build_table(torch.nn.Linear(2, 2), imgs, labels, sample_index=idx, progress=False)


def test_reference_images_agree_with_reference_table(reference_checkpoint, cifar_archive, test_table):
    """A CPU float32 rebuild of ~32 test images agrees with the H200 reference on ≥ 99.5 % of predictions."""
    model = load_backbone("resnet18_cifar", reference_checkpoint)
    imgs, labels = load_images(cifar_archive, "cifar10", "test")
    n = 32
    # A structured subset (40 of the 256 plans) keeps this test fast on 2 shared cores.
    masks = structured_plan_subset(8, num_random=10, seed=0)
    assert len(masks) == 40
    t = build_table(model, imgs[:n], labels[:n], sample_index=np.arange(n), plan_masks=masks, batch_size=n,
                    progress=False)
    cols = codes_from_masks(masks)
    np.testing.assert_array_equal(t.label, test_table.label[:n])
    agree = (t.pred == test_table.pred[:n][:, cols]).mean()
    assert agree >= 0.995, agree
    np.testing.assert_array_equal(t.plan_macs, test_table.plan_macs[cols])
    np.testing.assert_allclose(t.features, test_table.features[:n], atol=2e-2)  # reference stores float16


def test_build_table_script_smoke(tmp_path):
    """experiments/build_table.py end to end on the shipped demo sample (random weights, 4 images): writes a table
    that load_table accepts with the expected metadata, and refuses a bad --split with one clear line."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "ADAINF_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "t.npz"
    args = [sys.executable, "experiments/build_table.py", "--backbone", "resnet18_cifar", "--data",
            str(demo_archive_path()), "--split", "test", "--limit", "4", "--batch-size", "4", "--out", str(out),
            "--no-progress"]
    done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    t = load_table(out, backbone="resnet18_cifar", split="test")
    assert t.num_samples == 4 and t.num_plans == 256
    bad = subprocess.run(args[:6] + ["--split", "nope", "--out", str(tmp_path / "x.npz")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--split must be test, calib or fit" in bad.stderr
    assert not (tmp_path / "x.npz").exists()
