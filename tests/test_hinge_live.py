"""Live hinge scheduler: straight-through Gumbel gates into SkippableBackbone, joint fine-tuning (full / LoRA)."""

from __future__ import annotations

import pytest
import torch

from adainf_env.errors import ConfigError
from tests._tiny_backbones import TinyResNet


def _data(bb, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    with torch.no_grad():
        y = bb(x).argmax(1)  # labels = full model's predictions: executing every block is right
    return x, y


@pytest.mark.parametrize("finetune", ["none", "lora", "full"])
def test_live_hinge_trains_and_respects_budget(finetune):
    from agents.learners.hinge_live import LiveHingeTrainer, LoRAConv2d

    torch.manual_seed(0)
    bb = TinyResNet(num_blocks=4, seed=0)
    x, y = _data(bb)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    tr = LiveHingeTrainer(bb, block_cost=[0.2, 0.2, 0.2, 0.2], base_cost=0.2, lam=5.0, finetune=finetune, seed=0,
                          lr=1e-2)
    tr.fit_scaler(x)
    if finetune == "lora":
        assert any(isinstance(m, LoRAConv2d) for m in bb.modules())
    full = torch.ones(len(x))
    first = tr.step(x, y, full)
    for _ in range(20):
        last = tr.step(x, y, full)
    assert last["ce"] < first["ce"]  # learns to execute the blocks the labels need
    masks = tr.masks(x, torch.full((len(x),), 0.5))
    assert (tr.plan_cost(masks.float()) <= 0.5 + 1e-6).all()
    base_changed = any(not torch.equal(before[k], v) for k, v in bb.state_dict().items()
                       if k in before and "weight" in k and "bn" not in k)
    assert base_changed == (finetune == "full")  # LoRA and frozen runs never touch the original weights


def test_straight_through_gates_are_hard_with_gradients():
    from agents.learners.hinge_live import gumbel_sigmoid_st

    logits = torch.randn(5, 3, requires_grad=True)
    g = gumbel_sigmoid_st(logits, 0.5, torch.Generator().manual_seed(0))
    assert torch.allclose(g.detach(), g.detach().round(), atol=1e-6)  # hard up to float rounding
    g.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_live_hinge_bad_arguments():
    from agents.learners.hinge_live import LiveHingeTrainer

    bb = TinyResNet(num_blocks=4)
    with pytest.raises(ConfigError):
        LiveHingeTrainer(bb, [0.2] * 4, 0.2, finetune="half")
    with pytest.raises(ConfigError):
        LiveHingeTrainer(bb, [0.2] * 3, 0.2)
