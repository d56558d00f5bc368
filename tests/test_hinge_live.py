"""Live hinge scheduler: straight-through Gumbel gates into SkippableBackbone, joint fine-tuning (full / LoRA),
distillation, warm-up + cosine schedule, LoRA merging, resumable trainer state."""

from __future__ import annotations

import copy

import pytest
import torch

from adainf_env.errors import CheckpointError, ConfigError
from adainf_env.fileio import atomic_torch_save, safe_torch_load
from _tiny_backbones import TinyResNet

COSTS = dict(block_cost=[0.2, 0.2, 0.2, 0.2], base_cost=0.2)


def _base(state, key):
    """The weight ``key`` of the original architecture in ``state``; LoRA wrappers keep it as ``<layer>.base.weight``."""
    wrapped = key.replace(".weight", ".base.weight")
    return state[wrapped] if wrapped in state else state[key]


def _data(bb, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    with torch.no_grad():
        y = bb(x).argmax(1)  # labels = full model's predictions: executing every block is right
    return x, y


@pytest.mark.parametrize("finetune", ["none", "lora", "full"])
def test_live_hinge_trains_and_respects_budget(finetune):
    from agents.learners.hinge_live import LiveHingeTrainer, LoRAConv2d

    bb = TinyResNet(num_blocks=4, seed=0)
    x, y = _data(bb)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    tr = LiveHingeTrainer(bb, **COSTS, lam=5.0, finetune=finetune, seed=0, lr=1e-2)
    tr.fit_scaler(x)
    if finetune == "lora":
        assert any(isinstance(m, LoRAConv2d) for m in bb.modules())
    full = torch.ones(len(x))
    first = tr.step(x, y, full)
    for _ in range(20):
        last = tr.step(x, y, full)
    assert last["ce"] < first["ce"]  # learns to execute the blocks the labels need
    for budget in (0.2, 0.5, 0.7):
        masks = tr.masks(x, torch.full((len(x),), budget))
        assert (tr.plan_cost(masks.float()) <= budget + 1e-6).all()
    after = bb.state_dict()
    base_changed = any(not torch.equal(before[k], _base(after, k)) for k in before if k.endswith("conv1.weight"))
    assert base_changed == (finetune == "full")  # LoRA and frozen runs never touch the original weights


def test_hinge_term_falls_under_a_tight_budget():
    """Random initial gates overrun a 0.5 budget about half the time; the hinge term teaches the policy to fit."""
    from agents.learners.hinge_live import LiveHingeTrainer

    bb = TinyResNet(num_blocks=4, seed=1)
    x, y = _data(bb, n=96, seed=1)
    tr = LiveHingeTrainer(bb, **COSTS, lam=5.0, finetune="none", seed=3, lr=1e-2)
    tr.fit_scaler(x)
    b = torch.full((len(x),), 0.5)
    first = [tr.step(x, y, b) for _ in range(3)]
    for _ in range(40):
        tr.step(x, y, b)
    last = [tr.step(x, y, b) for _ in range(3)]
    h0 = sum(m["hinge"] for m in first) / 3
    h1 = sum(m["hinge"] for m in last) / 3
    assert h0 > 0.02 and h1 < 0.5 * h0, (h0, h1)
    assert sum(m["overrun_rate"] for m in last) / 3 < sum(m["overrun_rate"] for m in first) / 3


def test_lora_merge_is_exact_and_keeps_base_weights():
    from adainf_env.backbones import load_state_dict_checked
    from agents.learners.hinge_live import LiveHingeTrainer, merge_lora

    bb = TinyResNet(num_blocks=4, seed=2)
    orig = copy.deepcopy(bb)
    x, y = _data(bb, seed=2)
    tr = LiveHingeTrainer(bb, **COSTS, finetune="lora", seed=0, backbone_lr=5e-2)
    tr.fit_scaler(x)
    for _ in range(5):
        tr.step(x, y, torch.full((len(x),), 0.8))
    gates = torch.ones(len(x), 4)
    with torch.no_grad():
        lora_out = bb(x, mask=gates)
        assert not torch.allclose(lora_out, orig(x), atol=1e-4)  # the adapters did learn something
    for k, v in orig.state_dict().items():  # base weights are the originals, bit for bit
        assert torch.equal(v, _base(bb.state_dict(), k))
    assert merge_lora(bb) > 0
    with torch.no_grad():
        assert torch.allclose(bb(x, mask=gates), lora_out, rtol=1e-4, atol=1e-4 * lora_out.abs().max().item())
    fresh = TinyResNet(num_blocks=4, seed=5)
    load_state_dict_checked(fresh, bb.state_dict(), source="merged")  # original architecture's keys


def test_distillation_and_schedule():
    from agents.learners.hinge_live import LiveHingeTrainer, warmup_cosine

    assert warmup_cosine(0, total_steps=10, warmup_steps=4) == pytest.approx(0.25)
    assert warmup_cosine(3, total_steps=10, warmup_steps=4) == pytest.approx(1.0)
    assert warmup_cosine(7, total_steps=10, warmup_steps=4) == pytest.approx(0.5)
    assert warmup_cosine(10, total_steps=10, warmup_steps=4) == pytest.approx(0.0, abs=1e-12)
    bb = TinyResNet(num_blocks=4, seed=0)
    x, y = _data(bb)
    tr = LiveHingeTrainer(bb, **COSTS, finetune="full", kd_weight=0.5, total_steps=10, warmup_steps=4,
                          lr=1e-2, backbone_lr=1e-3, anchor_fraction=0.25, backbone_optimizer="sgd", seed=0)
    tr.fit_scaler(x)
    assert tr.lrs() == pytest.approx([2.5e-3, 2.5e-4])
    m = tr.step(x, y, torch.full((len(x),), 0.5))
    assert m["kd"] > 0  # skipped blocks change the output: the student differs from the full-model teacher
    assert m["anchor"] > 0  # the full-plan rows add their own loss
    assert isinstance(tr.opts[1], torch.optim.SGD)
    assert tr.lrs() == pytest.approx([5e-3, 5e-4])
    # the teacher is a frozen copy of the original weights
    assert all(not p.requires_grad for p in tr.teacher.parameters())


def test_warm_start_reproduces_target_masks():
    from agents.learners.hinge_live import LiveHingeTrainer

    bb = TinyResNet(num_blocks=4, seed=0)
    x, _ = _data(bb, n=40)
    tr = LiveHingeTrainer(bb, **COSTS, seed=0)
    tr.fit_scaler(x)
    with torch.no_grad():
        f = bb.features(bb.stem(bb.prepare(x)))
    budgets = torch.tensor([0.4, 0.6, 1.0]).repeat_interleave(len(x))
    target = {0.4: [1, 0, 0, 0], 0.6: [1, 0, 1, 0], 1.0: [1, 1, 1, 1]}
    masks = torch.tensor([target[round(float(b), 1)] for b in budgets]).bool()
    tr.warm_start(f.repeat(3, 1), budgets, masks, steps=300)
    got = tr._all_masks[tr.plans_from_features(f.repeat(3, 1), budgets)]
    assert (got == masks).all(dim=1).float().mean() > 0.95


def _trainer(finetune, seed=0):
    from agents.learners.hinge_live import LiveHingeTrainer

    torch.manual_seed(0)  # TinyResNet's fc bias comes from the global RNG
    bb = TinyResNet(num_blocks=4, seed=0)
    tr = LiveHingeTrainer(bb, **COSTS, finetune=finetune, kd_weight=0.3, total_steps=8, warmup_steps=2, lr=1e-2,
                          backbone_lr=1e-3, seed=seed)
    return tr


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_resume_equals_uninterrupted(finetune, tmp_path):
    x, y = _data(TinyResNet(num_blocks=4, seed=0), n=32)
    b = torch.full((32,), 0.6)
    ref = _trainer(finetune)
    ref.fit_scaler(x)
    ref_losses = [ref.step(x, y, b)["loss"] for _ in range(8)]

    first = _trainer(finetune)
    first.fit_scaler(x)
    losses = [first.step(x, y, b)["loss"] for _ in range(3)]
    atomic_torch_save(first.state_dict(), tmp_path / "state.pt")
    del first  # "killed"
    resumed = _trainer(finetune, seed=99)  # a different seed: everything that matters must come from the file
    resumed.load_state_dict(safe_torch_load(tmp_path / "state.pt"))
    losses += [resumed.step(x, y, b)["loss"] for _ in range(5)]
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    for (k, v), (k2, v2) in zip(ref.backbone.state_dict().items(), resumed.backbone.state_dict().items()):
        assert k == k2 and torch.allclose(v.float(), v2.float(), rtol=1e-5, atol=1e-6), k
    for v, v2 in zip(ref.policy.state_dict().values(), resumed.policy.state_dict().values()):
        assert torch.allclose(v, v2, rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError):
        _trainer("none").load_state_dict(safe_torch_load(tmp_path / "state.pt"))


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
    with pytest.raises(ConfigError):
        LiveHingeTrainer(bb, [0.2] * 4, 0.2, kd_weight=1.5)
    with pytest.raises(ConfigError):
        LiveHingeTrainer(bb, [0.2] * 4, 0.2, total_steps=0)
