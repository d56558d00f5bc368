"""Latency cost model: profiles are measured, saved and validated; plan latencies follow the additive model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adainf_env.backbones.base import SkippableBackbone, SkippableBlock
from adainf_env.errors import AdaInfError, ConfigError, TableMismatchError
from adainf_env.latency import (
    LatencyProfile,
    attach_latency,
    device_name,
    load_profile,
    plan_latency,
    plan_latency_ms,
    profile_latency,
    save_profile,
    time_callable,
    validate_latency_model,
)
from adainf_env.plans import masks_from_codes
from _tiny_backbones import TinyResNet


class _SleepBlock(SkippableBlock):
    """Residual branch that takes a known wall-clock time (sleep), so the additive model has a ground truth."""

    def __init__(self, ms: float) -> None:
        super().__init__()
        self.ms = ms

    def residual(self, x):
        time.sleep(self.ms / 1e3)
        return x * 0.5


class SleepyNet(SkippableBackbone):
    name = "sleepy"

    def __init__(self, block_ms=(5.0, 10.0, 15.0, 20.0)) -> None:
        super().__init__(num_classes=3, input_size=(3, 4, 4), mean=(0.5,) * 3, std=(0.25,) * 3)
        self.blocks = torch.nn.ModuleList(_SleepBlock(ms) for ms in block_ms)
        self.fc = torch.nn.Linear(3, 3)

    def stem(self, x):
        time.sleep(0.001)
        return x

    def features(self, h):
        return h.mean(dim=(2, 3))

    def head(self, h):
        return self.fc(h.mean(dim=(2, 3)))


def _synthetic_profile(**kw) -> LatencyProfile:
    args = dict(backbone="toy", num_blocks=4, device="cpu: test", batch_sizes=(1, 8),
                stem_ms=np.array([1.0, 4.0]), head_ms=np.array([0.5, 1.0]),
                block_ms=np.array([[1.0, 2.0, 3.0, 4.0], [8.0, 16.0, 24.0, 32.0]]),
                skip_ms=np.array([[0.0, 0.5, 0.0, 0.5], [0.0, 2.0, 0.0, 2.0]]),
                residual_ms=np.zeros((2, 4)), shortcut_ms=np.zeros((2, 4)))
    args.update(kw)
    return LatencyProfile(**args)


def test_plan_latency_is_the_additive_model() -> None:
    prof = _synthetic_profile()
    masks = masks_from_codes(np.arange(16), 4)
    ms = plan_latency_ms(prof, masks, 1)
    # plan 0: stem + head + all skips; plan 15: stem + head + all blocks; plan 5 = blocks 0 and 2 executed.
    assert ms[0] == pytest.approx(1.0 + 0.5 + 1.0)
    assert ms[15] == pytest.approx(1.0 + 0.5 + 10.0)
    assert ms[5] == pytest.approx(1.0 + 0.5 + 1.0 + 0.5 + 3.0 + 0.5)
    frac = plan_latency(prof, masks, 8)
    assert frac[15] == pytest.approx(1.0)
    assert frac[0] == pytest.approx((4.0 + 1.0 + 4.0) / (4.0 + 1.0 + 80.0))
    assert prof.full_ms(8) == pytest.approx(85.0)
    with pytest.raises(ConfigError, match="batch size 256"):
        plan_latency(prof, masks, 256)
    with pytest.raises(ConfigError, match="B=4"):
        plan_latency(prof, masks_from_codes(np.arange(8), 3), 1)


def test_profile_measures_every_part_and_round_trips(tmp_path: Path) -> None:
    bb = TinyResNet(num_blocks=4)
    prof = profile_latency(bb, batch_sizes=(1, 4), repeats=3, warmup=1, progress=False)
    assert prof.backbone == "tiny_resnet" and prof.num_blocks == 4 and prof.batch_sizes == (1, 4)
    assert prof.device.startswith("cpu:") and prof.device == device_name("cpu")
    assert prof.block_ms.shape == (2, 4) and (prof.block_ms > 0).all() and (prof.stem_ms > 0).all()
    assert prof.meta["threads"] == torch.get_num_threads() and prof.meta["torch"] == torch.__version__
    path = save_profile(prof, tmp_path / "prof.json")
    assert [p.name for p in tmp_path.iterdir()] == ["prof.json"]  # atomic write leaves no temp file
    back = load_profile(path, backbone=bb)
    assert back.to_dict() == prof.to_dict()
    with pytest.raises(TableMismatchError, match="measured on 'tiny_resnet'"):
        load_profile(path, backbone="resnet18_cifar")
    with pytest.raises(TableMismatchError, match="4 blocks"):
        load_profile(path, backbone=TinyResNet(num_blocks=3))


def test_additive_model_predicts_end_to_end_time() -> None:
    """On a backbone whose parts take known times, the profile recovers them and predicts plan times."""
    bb = SleepyNet()
    prof = profile_latency(bb, batch_sizes=(2,), repeats=3, warmup=1, progress=False)
    np.testing.assert_allclose(prof.block_ms[0], [5.0, 10.0, 15.0, 20.0], rtol=0.5, atol=2.0)
    assert (prof.skip_ms[0] < 0.5).all()
    masks = masks_from_codes(np.array([0, 3, 9, 15]), 4)
    val = validate_latency_model(bb, prof, masks, batch_size=2, repeats=3, progress=False)
    assert val.measured_ms.shape == (4,) and np.isfinite(val.rel_err).all()
    assert val.mean_rel_err < 0.2, val.to_dict()
    assert np.all(np.diff(val.predicted_ms[[0, 1, 3]]) > 0)
    frac = plan_latency(prof, masks, 2)
    assert frac[-1] == pytest.approx(1.0) and frac[0] < 0.2


def test_process_clock_counts_cpu_work_not_sleep() -> None:
    busy = time_callable(lambda: sum(i * i for i in range(200_000)), repeats=3, clock="process")
    idle = time_callable(lambda: time.sleep(0.02), repeats=3, clock="process")
    assert np.median(busy) > 1.0 and np.median(idle) < 5.0
    prof = profile_latency(SleepyNet(), batch_sizes=(1,), repeats=1, warmup=0, clock="process", progress=False)
    assert prof.meta["clock"] == "process" and prof.block_ms.max() < 5.0  # sleeping costs no CPU


def test_attach_latency_returns_a_table_copy_with_latency_costs() -> None:
    from adainf_env.tables.toy import make_toy_table

    table = make_toy_table(40, num_blocks=4)
    prof = _synthetic_profile()
    t2 = attach_latency(table, prof, 8)
    assert table.plan_latency is None and t2 is not table
    np.testing.assert_allclose(t2.plan_cost("latency"), plan_latency(prof, table.plan_masks, 8))
    assert t2.meta["latency_profile"]["device"] == "cpu: test"
    np.testing.assert_array_equal(t2.pred, table.pred)
    with pytest.raises(TableMismatchError, match="backbone"):
        attach_latency(table, _synthetic_profile(backbone="resnet18_cifar"), 8)
    with pytest.raises(TableMismatchError, match="blocks"):
        attach_latency(make_toy_table(40, num_blocks=3), prof, 8)


def test_bad_profiles_and_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="shape"):
        _synthetic_profile(block_ms=np.ones((2, 3)))
    with pytest.raises(ConfigError, match="finite"):
        _synthetic_profile(stem_ms=np.array([1.0, np.nan]))
    with pytest.raises(ConfigError, match="batch_sizes"):
        _synthetic_profile(batch_sizes=(1, 1))
    with pytest.raises(ConfigError, match="repeats"):
        time_callable(lambda: None, repeats=0)
    with pytest.raises(ConfigError, match="clock"):
        time_callable(lambda: None, repeats=1, clock="cycles")
    with pytest.raises(ConfigError, match="only measures CPU work"):
        time_callable(lambda: None, repeats=1, device="cuda", clock="process")
    with pytest.raises(ConfigError, match="no such"):
        load_profile(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\x80\x04not json")
    with pytest.raises(ConfigError, match="not a JSON"):
        load_profile(bad)
    d = _synthetic_profile().to_dict()
    del d["skip_ms"]
    bad.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="lacks"):
        load_profile(bad)
    for key, junk in (("num_blocks", float("inf")), ("batch_sizes", [1, float("nan")]), ("format", 2),
                      ("block_ms", [[1.0, 2.0]]), ("meta", [1])):
        d = _synthetic_profile().to_dict()
        d[key] = junk
        bad.write_text(json.dumps(d))
        with pytest.raises(ConfigError):
            load_profile(bad)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=6),
                    max_leaves=20),
       st.sampled_from(["format", "backbone", "num_blocks", "batch_sizes", "stem_ms", "block_ms", "meta"]))
def test_load_profile_garbage_gives_only_clean_errors(tmp_path: Path, junk, key: str) -> None:
    path = tmp_path / "p.json"
    # Either the whole file is junk, or one field of a valid profile is replaced by junk.
    d = _synthetic_profile().to_dict()
    d[key] = junk
    for obj in (junk, d):
        path.write_text(json.dumps(obj))
        try:
            load_profile(path)
        except AdaInfError:
            pass
