"""AdaptiveExecutor: mixed-plan batches give the same answers as running each sample alone, and bad input is refused."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from adainf_env.costs import measure_macs, plan_macs
from adainf_env.errors import ConfigError
from adainf_env.executor import AdaptiveExecutor, ExecResult
from adainf_env.plans import masks_from_codes
from _numerics import assert_argmax_agrees, assert_close_scaled
from _tiny_backbones import TinyResNet, TinyTokenNet


def _per_sample_logits(backbone, x: torch.Tensor, masks: np.ndarray, plans: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([backbone(x[i : i + 1], mask=torch.from_numpy(masks[p])) for i, p in enumerate(plans)]).numpy()


def _fixed(plans: np.ndarray):
    return lambda feats, budgets: plans


@pytest.fixture(scope="module")
def tiny():
    bb = TinyResNet(num_blocks=4)
    return bb, masks_from_codes(np.arange(16), 4)


@pytest.mark.parametrize("strategy", ["gather", "group", "auto"])
@pytest.mark.parametrize("net", ["resnet", "tokens"])
def test_mixed_batch_matches_per_sample_forward(net: str, strategy: str) -> None:
    bb = TinyResNet(num_blocks=4) if net == "resnet" else TinyTokenNet(num_blocks=3)
    b = bb.num_blocks
    masks = masks_from_codes(np.arange(1 << b), b)
    rng = np.random.default_rng(1)
    x = torch.rand(41, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    plans = rng.integers(0, len(masks), size=41)
    ex = AdaptiveExecutor(bb, masks, strategy=strategy)
    res = ex.run(x, _fixed(plans), 0.5)
    ref = _per_sample_logits(bb, x, masks, plans)
    assert_close_scaled(res.logits, ref, what="mixed-batch vs per-sample logits")
    assert_argmax_agrees(res.pred, ref)
    assert np.array_equal(res.plan, plans)
    # conf is the max softmax probability of the row's logits.
    p = torch.softmax(torch.from_numpy(ref), 1).max(1).values.numpy()
    assert_close_scaled(res.conf, p, what="confidences")


def test_strategies_and_padding_agree(tiny) -> None:
    bb, masks = tiny
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    # Few distinct plans (auto → group) and many (auto → gather), plus padded gathers (bucket) and single-plan batches.
    for plans in (np.repeat([3, 12], 32), np.arange(64) % 16, np.full(64, 15), np.full(64, 0)):
        outs = [AdaptiveExecutor(bb, masks, strategy=s, bucket=k).execute(x, plans).numpy()
                for s, k in (("gather", 0), ("group", 0), ("auto", 0), ("gather", 8))]
        for o in outs[1:]:
            assert_close_scaled(o, outs[0], what="logits of two strategies")
    ex = AdaptiveExecutor(bb, masks)
    assert ex.choose_strategy(np.repeat([3, 12], 32)) == "group"
    assert ex.choose_strategy(np.arange(64) % 16) == "gather"


def test_scheduler_sees_features_and_budgets_and_costs_are_reported(tiny) -> None:
    bb, masks = tiny
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    seen = {}

    def sched(feats, budgets):
        seen["f"], seen["b"] = feats, budgets
        # A budget-aware rule: the most expensive plan whose cost fits.
        cost = ex.plan_cost
        return np.array([np.flatnonzero(cost <= b)[np.argmax(cost[cost <= b])] for b in budgets])

    ex = AdaptiveExecutor(bb, masks, feature_dim=bb.feature_dim)
    budgets = np.array([0.3, 0.5, 0.7, 1.0, 0.45, 0.9])
    res = ex.run(x, sched, budgets)
    with torch.inference_mode():
        want = bb.features(bb.stem(bb.prepare(x))).numpy()
    assert isinstance(seen["f"], np.ndarray) and seen["f"].shape == (6, bb.feature_dim)
    assert_close_scaled(seen["f"], want, what="scheduler features")
    np.testing.assert_array_equal(seen["b"], budgets)
    assert isinstance(res, ExecResult)
    np.testing.assert_array_equal(res.cost, ex.plan_cost[res.plan])
    assert (res.cost <= budgets + 1e-12).all()
    assert res.plan[3] == 15  # budget 1.0 → the full plan
    # Default costs are MACs fractions from the cost model; the full plan costs 1.
    mp = measure_macs(bb)
    np.testing.assert_allclose(ex.plan_cost, plan_macs(mp, masks) / mp.full)
    assert ex.plan_cost[15] == pytest.approx(1.0)
    # Torch features on request; uint8 images are the same as [0, 1] floats.
    ex_t = AdaptiveExecutor(bb, masks, feature_format="torch")
    ex_t.run(x, sched, budgets)
    assert isinstance(seen["f"], torch.Tensor)
    x8 = (x * 255).round().to(torch.uint8)
    assert_close_scaled(ex.run(x8, _fixed(res.plan), budgets).logits,
                        ex.run(x8.float() / 255, _fixed(res.plan), budgets).logits, what="uint8 vs float input")


def test_from_table_uses_table_plan_space_and_costs(tiny) -> None:
    from adainf_env.tables.toy import make_toy_table

    bb, masks = tiny
    table = make_toy_table(50, num_blocks=4)
    with pytest.raises(ConfigError, match="feature-size mismatch"):
        AdaptiveExecutor.from_table(bb, table)  # toy features are 5-d, the backbone's 4-d
    ex = AdaptiveExecutor(bb, table.plan_masks, table.plan_cost())
    res = ex.run(torch.rand(3, 3, 8, 8), _fixed(np.array([0, 5, 15])), 1.0)
    np.testing.assert_allclose(res.cost, table.plan_cost()[[0, 5, 15]])


def test_bad_input_is_refused_clearly(tiny) -> None:
    bb, masks = tiny
    ex = AdaptiveExecutor(bb, masks)
    x = torch.rand(4, 3, 8, 8)
    ok = _fixed(np.zeros(4, dtype=np.int64))
    with pytest.raises(ConfigError, match="empty batch"):
        ex.run(torch.zeros(0, 3, 8, 8), ok, 0.5)
    with pytest.raises(ConfigError, match="out of range"):
        ex.run(x, _fixed(np.array([0, 1, 16, 2])), 0.5)
    with pytest.raises(ConfigError, match="out of range"):
        ex.run(x, _fixed(np.array([0, -1, 1, 2])), 0.5)
    with pytest.raises(ConfigError, match="integer plan indices"):
        ex.run(x, _fixed(np.array([0.0, 1.0, 2.0, 3.0])), 0.5)
    with pytest.raises(ConfigError, match="one plan per row"):
        ex.run(x, _fixed(np.array([0, 1])), 0.5)
    for bad in (0.0, 1.5, float("nan"), -0.1, [0.5, 0.5]):
        with pytest.raises(ConfigError, match="budgets"):
            ex.run(x, ok, bad)
    with pytest.raises(ConfigError, match="channels"):
        ex.run(torch.rand(4, 1, 8, 8), ok, 0.5)
    with pytest.raises(ConfigError, match=r"\[N, C, H, W\]"):
        ex.run(torch.rand(3, 8, 8), ok, 0.5)
    with pytest.raises(ConfigError, match="feature-size mismatch"):
        AdaptiveExecutor(bb, masks, feature_dim=64)
    with pytest.raises(ConfigError, match="blocks per plan"):
        AdaptiveExecutor(bb, masks_from_codes(np.arange(8), 3))
    with pytest.raises(ConfigError, match="plan_cost"):
        AdaptiveExecutor(bb, masks, np.ones(3))
    with pytest.raises(ConfigError, match="plan_cost"):
        AdaptiveExecutor(bb, masks, np.zeros(16))
    with pytest.raises(ConfigError, match="strategy"):
        AdaptiveExecutor(bb, masks, strategy="fastest")
    with pytest.raises(ConfigError, match="SkippableBackbone"):
        AdaptiveExecutor(torch.nn.Linear(2, 2), masks)


# ---------------------------------------------------------------------- the reference ResNet18 on real images
def _real_test_images(archive: Path, indices: np.ndarray) -> torch.Tensor:
    """Test-split images at ``indices`` (sorted path order, ../shared/README.md) as uint8 [N, 3, 32, 32]."""
    from PIL import Image

    want = set(int(i) for i in indices)
    with tarfile.open(archive, "r:gz") as tf:
        members = sorted((m for m in tf.getmembers() if m.isfile() and "test/" in m.name and m.name.endswith(".jpg")),
                         key=lambda m: m.name)
        imgs = {}
        for i, m in enumerate(members):
            if i in want:
                data = tf.extractfile(m).read()  # type: ignore[union-attr]
                imgs[i] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return torch.from_numpy(np.stack([imgs[int(i)] for i in indices])).permute(0, 3, 1, 2).contiguous()


def test_resnet18_reference_mixed_plans_match_single_runs_and_table(reference_checkpoint, cifar_archive,
                                                                    test_table) -> None:
    from adainf_env.backbones import load_backbone

    bb = load_backbone("resnet18_cifar", checkpoint=reference_checkpoint)
    idx = np.arange(7, 10000, 397)  # 26 test images spread over all classes
    x = _real_test_images(cifar_archive, idx)
    rng = np.random.default_rng(0)
    plans = rng.integers(0, 256, size=len(idx))
    ex = AdaptiveExecutor.from_table(bb, test_table)
    res = ex.run(x, _fixed(plans), 1.0)
    ref = _per_sample_logits(bb, x, test_table.plan_masks, plans)
    assert_close_scaled(res.logits, ref, rtol=1e-3, scale_tol=1e-4, what="ResNet18 mixed-batch vs per-sample logits")
    assert_argmax_agrees(res.pred, ref, scale_tol=1e-4)
    # The reference table (built independently on an H200) agrees on 99.99 % of (image, plan) predictions.
    table_pred = test_table.pred[idx, plans]
    assert (res.pred == table_pred).mean() >= 25 / 26
    np.testing.assert_allclose(res.cost, test_table.plan_cost()[plans])


def test_benchmark_script_smoke_runs(tmp_path: Path) -> None:
    """benchmarks/bench_executor.py end to end at toy sizes (random weights): JSON summary and files written."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_executor.py"
    spec = importlib.util.spec_from_file_location("bench_executor", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_executor"] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
    finally:
        sys.modules.pop("bench_executor", None)
    summary = mod.main(["--checkpoint", "", "--threads", "1", "--big-batch", "4", "--b1-requests", "2",
                        "--rounds", "1", "--latency-repeats", "1", "--validate-plans", "1", "--out", str(tmp_path)])
    assert summary["speedup_b1"] > 0 and summary["speedup_b4"] > 0 and summary["device"].startswith("cpu")
    assert summary["mix_macs_fraction"] == pytest.approx(0.5, abs=1e-3)
    assert np.isfinite(summary["latency_mean_rel_err_b4"])
    assert (tmp_path / "results.json").is_file() and (tmp_path / "latency_profile.json").is_file()
    with pytest.raises(ConfigError, match="strategy"):
        mod.main(["--strategy", "fastest"])
