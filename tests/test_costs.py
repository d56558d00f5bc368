"""MACs cost model: counted with torch.utils.flop_counter, equal to the reference summary for resnet18_cifar."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _tiny_backbones import TinyResNet, TinyTokenNet
from adainf_env.costs import MacsProfile, count_macs, measure_macs, plan_macs
from adainf_env.errors import ConfigError
from adainf_env.plans import masks_from_codes


def _conv_macs(conv: torch.nn.Conv2d, out_hw: tuple[int, int]) -> int:
    # Independent check (the cost model itself never uses formulas): Cout · Cin/groups · kh · kw · H_out · W_out.
    kh, kw = conv.kernel_size
    return conv.out_channels * conv.in_channels // conv.groups * kh * kw * out_hw[0] * out_hw[1]


def test_tiny_resnet_macs_match_conv_arithmetic():
    m = TinyResNet(num_blocks=4, width=4)
    c = measure_macs(m)
    assert c.stem == _conv_macs(m.stem_net[0], (8, 8))
    hw = 8
    for i, blk in enumerate(m.blocks):
        out = hw // blk.conv1.stride[0]
        assert c.blocks[i, 0] == _conv_macs(blk.conv1, (out, out)) + _conv_macs(blk.conv2, (out, out))
        assert c.blocks[i, 1] == (0 if blk.proj is None else _conv_macs(blk.proj[0], (out, out)))
        hw = out
    assert c.head == m.fc.in_features * m.fc.out_features
    assert c.full == c.stem + c.head + c.blocks.sum()
    assert c.base == c.stem + c.head + c.blocks[:, 1].sum()


def test_token_backbone_counts_linear_and_attention_matmuls():
    m = TinyTokenNet(num_blocks=3, d=8)
    c = measure_macs(m)
    t, d = 4, 8  # 4 tokens of width 8
    qkv, scores, mix, mlp = t * d * 3 * d, t * t * d, t * t * d, t * d * d
    assert c.blocks[:, 0].tolist() == [qkv + scores + mix + mlp] * 3
    assert c.blocks[:, 1].tolist() == [0, 0, 0]
    assert c.stem == 3 * 4 * 4 * d * t and c.head == d * m.num_classes


def test_measure_restores_mode_and_needs_backbone():
    m = TinyResNet().train()
    measure_macs(m)
    assert m.training
    with pytest.raises(ConfigError, match="SkippableBackbone"):
        measure_macs(torch.nn.Linear(2, 2))


def test_count_macs_of_a_matmul():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    macs, out = count_macs(torch.matmul, a, b)
    assert macs == 3 * 5 * 7 and out.shape == (3, 7)


def test_plan_macs_sums_executed_residuals_and_all_shortcuts():
    c = MacsProfile(stem=10, blocks=np.array([[100, 0], [200, 7], [300, 0]]), head=3, input_size=(3, 8, 8))
    masks = masks_from_codes(np.arange(8), 3)
    got = plan_macs(c, masks)
    assert got.dtype == np.int64
    assert got.tolist() == [20, 120, 220, 320, 320, 420, 520, 620]
    assert plan_macs(c, np.array([1, 0, 1])).tolist() == [420]
    with pytest.raises(ConfigError, match="B=3"):
        plan_macs(c, np.ones((2, 4), bool))
    with pytest.raises(ConfigError, match="boolean"):
        plan_macs(c, np.full((1, 3), 2))
    with pytest.raises(ConfigError):
        MacsProfile(stem=1, blocks=np.zeros((3,)), head=1, input_size=(3, 8, 8))


def test_resnet18_macs_equal_reference_summary(reference_dir):
    from adainf_env.backbones import load_backbone

    ref = json.loads((reference_dir / "summary.json").read_text())["macs"]
    c = measure_macs(load_backbone("resnet18_cifar"))  # MACs depend on the architecture only
    assert c.stem == ref["stem"]
    assert c.blocks.tolist() == ref["blocks"]
    assert c.head == ref["fc"]
    assert c.full == 555_422_720 and c.base == 8_066_048  # ../shared/README.md
    masks = masks_from_codes(np.arange(256), 8)
    from adainf_env import load_table

    ref_table = load_table(reference_dir / "table_test.npz")
    np.testing.assert_array_equal(plan_macs(c, masks), ref_table.plan_macs)


def test_resnet32_has_15_blocks_with_three_projection_free_stages():
    from adainf_env.backbones import load_backbone

    c = measure_macs(load_backbone("resnet32_cifar"))
    assert c.num_blocks == 15
    # Down-sampling blocks (5 and 10) carry the only shortcut MACs; all other residuals cost the same.
    assert np.flatnonzero(c.blocks[:, 1]).tolist() == [5, 10]
    assert len(set(c.blocks[[i for i in range(15) if i not in (5, 10)], 0].tolist())) == 1
