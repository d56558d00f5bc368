"""Backbones: resnet18_cifar reproduces the reference checkpoint's outcome table, resnet32_cifar structure, CLIP ViT-B/32
equals open_clip's own zero-shot logits, and load_backbone refuses unsafe or unfitting checkpoints clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adainf_env import load_backbone
from adainf_env.backbones import BACKBONES
from adainf_env.backbones.resnet_cifar import resnet18_cifar, resnet32_cifar
from adainf_env.errors import CheckpointError, ConfigError, UnsafeFileError
from _numerics import assert_close_scaled


def _mask(plan: int, blocks: int) -> torch.Tensor:
    return torch.tensor([(plan >> i) & 1 for i in range(blocks)], dtype=torch.bool)  # bit i = block i executed


# ----------------------------------------------------------------------------------------------- architecture
def test_resnet18_layout_matches_documented_keys() -> None:
    m = resnet18_cifar()
    sd = m.state_dict()
    assert m.num_blocks == 8 and m.feature_dim == 64
    assert tuple(sd["stem.0.weight"].shape) == (64, 3, 3, 3) and "stem.1.running_var" in sd
    assert tuple(sd["fc.weight"].shape) == (10, 512)
    with_proj = sorted({int(k.split(".")[1]) for k in sd if ".shortcut.0." in k})
    assert with_proj == [2, 4, 6]
    assert tuple(sd["blocks.6.shortcut.0.weight"].shape) == (512, 256, 1, 1)
    assert [round(b.survival_prob, 4) for b in m.blocks] == [0.9375, 0.875, 0.8125, 0.75, 0.6875, 0.625, 0.5625, 0.5]


def test_resnet18_keys_and_shapes_equal_reference(reference_checkpoint: Path) -> None:
    ref = torch.load(reference_checkpoint, map_location="cpu", weights_only=True)
    own = resnet18_cifar().state_dict()
    assert {k: tuple(v.shape) for k, v in ref.items()} == {k: tuple(v.shape) for k, v in own.items()}


def test_resnet32_structure_and_skip_semantics() -> None:
    torch.manual_seed(0)
    m = resnet32_cifar(num_classes=100).eval()
    assert m.num_blocks == 15 and m.feature_dim == 16
    chans = [b.out_ch for b in m.blocks]
    assert chans == [16] * 5 + [32] * 5 + [64] * 5
    assert [i for i, b in enumerate(m.blocks) if len(b.proj) > 0] == [5, 10]  # projection where shape changes
    assert 0.46e6 < sum(p.numel() for p in m.parameters()) < 0.48e6  # He et al.: ResNet-32 ≈ 0.46 M (+ projections)
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert m(x).shape == (3, 100)
        h = torch.randn(2, 16, 32, 32)
        blk = m.blocks[5]
        assert torch.equal(blk.skip(h), torch.relu(blk.proj(h)))  # skipped = relu(shortcut(x))
        assert_close_scaled(blk(h), torch.relu(blk.proj(h) + blk.residual(h)), what="executed block")
        # Per-row gates 1/0 equal running each row under its own plan.
        gates = torch.stack([_mask(2**15 - 1, 15), _mask(0b101010101010101, 15)]).float()
        xb = x[:2]
        rows = torch.cat([m(xb[:1], gates[0].bool()), m(xb[1:], gates[1].bool())])
        assert_close_scaled(m(xb, gates), rows, what="gated batch vs per-row logits")


def test_stochastic_depth_active_only_in_training() -> None:
    torch.manual_seed(0)
    m = resnet32_cifar(final_survival=0.5)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
        m.train()
        a, b = m(x), m(x)
    assert (a - b).abs().max() > 1e-2 * a.abs().max()  # different blocks dropped per forward: far beyond rounding


# ----------------------------------------------------------------------------------------------- reference agreement
@pytest.fixture(scope="module")
def reference_model(reference_checkpoint: Path):
    return load_backbone("resnet18_cifar", checkpoint=reference_checkpoint)


@pytest.fixture(scope="module")
def test_images(cifar_archive: Path, tmp_path_factory: pytest.TempPathFactory):
    import os

    from adainf_env.data import load_images

    old = os.environ.get("ADAINF_CACHE")
    os.environ["ADAINF_CACHE"] = str(tmp_path_factory.getbasetemp() / "adainf_cache")  # shared with test_data
    try:
        return load_images(cifar_archive, dataset="cifar10", split="test", limit=64)
    finally:
        if old is None:
            del os.environ["ADAINF_CACHE"]
        else:
            os.environ["ADAINF_CACHE"] = old


def test_reference_checkpoint_reproduces_reference_table(reference_model, test_images, test_table,
                                                         reference_checkpoint: Path) -> None:
    from adainf_env.fileio import sha256_file

    m = reference_model
    assert m.name == "resnet18_cifar" and m.checkpoint_sha256 == sha256_file(reference_checkpoint)
    assert all(p.dtype == torch.float32 for p in m.parameters())
    images, labels = test_images
    ref = np.load(reference_checkpoint.parent / "table_test.npz", allow_pickle=False)
    assert np.array_equal(labels, ref["label"][:64].astype(np.int64))
    x = torch.from_numpy(images)
    plans = [255, 0, 85, 170, 15, 240]  # every block both run and skipped
    agree = []
    with torch.no_grad():
        feats = m.features(m.stem(m.prepare(x))).numpy()
        # The reference stored float16 features computed on another device: float16 rounding dominates.
        assert_close_scaled(feats, ref["stem_feat"][:64], rtol=3e-3, scale_tol=3e-3, what="stem features")
        for p in plans:
            pred = m(x, _mask(p, 8)).argmax(1).numpy()
            agree.append(pred == ref["pred"][:64, p])
    assert np.mean(agree) >= 0.99, f"agreement with the reference table {np.mean(agree):.4f}"
    assert np.mean(agree[0]) >= 0.98  # full model on its own


# ----------------------------------------------------------------------------------------------- load_backbone
def test_unknown_backbone_lists_known_names() -> None:
    with pytest.raises(ConfigError) as ei:
        load_backbone("resnet50_imagenet")
    for name in BACKBONES:
        assert name in str(ei.value)
    with pytest.raises(ConfigError):
        load_backbone("resnet18_cifar", num_classes=0)
    with pytest.raises(ConfigError, match="pretrained"):
        load_backbone("resnet32_cifar", pretrained="openai")


def test_resnet32_refuses_reference_resnet18_checkpoint(reference_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError) as ei:
        load_backbone("resnet32_cifar", checkpoint=reference_checkpoint)
    msg = str(ei.value)
    assert "missing keys" in msg and "unexpected keys" in msg and "mismatched shapes" in msg
    assert "blocks.5.shortcut.0.weight" in msg  # a specific key, not a generic failure
    with pytest.raises(CheckpointError, match="fc.weight"):
        load_backbone("resnet18_cifar", checkpoint=reference_checkpoint, num_classes=100)


def test_roundtrip_and_mismatch_without_shared(tmp_path: Path) -> None:
    torch.manual_seed(1)
    m = resnet32_cifar(num_classes=7).eval()
    for b in m.modules():
        if isinstance(b, torch.nn.BatchNorm2d):  # non-trivial running stats so eval mode is actually tested
            b.running_mean.uniform_(-0.1, 0.1)
            b.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "r32.pt"
    torch.save({"state_dict": {k: v.half() for k, v in m.state_dict().items()}, "epoch": 3}, path)
    loaded = load_backbone("resnet32_cifar", checkpoint=path)
    assert loaded.num_classes == 7 and not loaded.training  # num_classes taken from the checkpoint
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    expected = resnet32_cifar(num_classes=7).eval()
    expected.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in m.state_dict().items()})
    with torch.no_grad():
        assert_close_scaled(loaded(x), expected(x), what="reloaded model logits")
    with pytest.raises(CheckpointError, match="missing keys: .*stem.0.weight"):
        load_backbone("resnet18_cifar", checkpoint=path)
    notsd = tmp_path / "list.pt"
    torch.save([1, 2, 3], notsd)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_backbone("resnet32_cifar", checkpoint=notsd)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_backbone("resnet32_cifar", checkpoint=trunc)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_backbone("resnet32_cifar", checkpoint=tmp_path / "absent.pt")


class _Payload:
    """Unpickling this would create a file: proof that the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_bearing_checkpoint_refused_without_running_payload(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    sd = resnet18_cifar(width=4).state_dict()
    sd["stem.0.weight"] = _Payload(marker)  # looks like a state dict, carries a payload
    torch.save(sd, evil)
    assert not marker.exists()
    with pytest.raises(UnsafeFileError):
        load_backbone("resnet18_cifar", checkpoint=evil)
    assert not marker.exists(), "the pickle payload was executed"


# ----------------------------------------------------------------------------------------------- CLIP ViT-B/32
@pytest.fixture(scope="module")
def clip_pair():
    open_clip = pytest.importorskip("open_clip")
    from adainf_env.backbones.clip_vit import ClipViT, build_open_clip

    torch.manual_seed(0)
    reference = build_open_clip()  # random init, no network
    names = ["airplane", "sweet_pepper", "maple_tree", "dog"]
    ours = ClipViT(reference, names).eval()
    return open_clip, reference, ours, names


def test_clip_structure(clip_pair) -> None:
    _, _, ours, names = clip_pair
    assert ours.num_blocks == 12 and ours.feature_dim == 768 and ours.num_classes == len(names)
    assert ours.input_size == (3, 224, 224)
    assert not any(k.startswith("transformer.") or "token_embedding" in k for k in ours.state_dict())  # image tower
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        h = ours.stem(ours.prepare(x))
        assert h.shape == (2, 50, 768) and ours.features(h).shape == (2, 768)
        assert torch.equal(ours.blocks[3].skip(h), h)  # identity shortcut
        assert_close_scaled(ours.blocks[3].residual(h) + h, ours.blocks[3].block(h), what="ViT block")


def test_clip_unskipped_equals_open_clip_zero_shot(clip_pair) -> None:
    open_clip, reference, ours, names = clip_pair
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    tokens = open_clip.get_tokenizer("ViT-B-32")([f"a photo of a {n.replace('_', ' ')}." for n in names])
    with torch.no_grad():
        xp = ours.prepare(x)
        expected = reference.logit_scale.exp() * reference.encode_image(xp, normalize=True) @ \
            reference.encode_text(tokens, normalize=True).T
        got = ours(x)
        assert_close_scaled(got, expected, what="zero-shot logits")
        # Gated path x + (block(x) − x) adds one more rounding of the residual stream.
        assert_close_scaled(ours(x, torch.ones(2, 12)), expected, scale_tol=1e-4, what="gated zero-shot logits")
        skipped = ours(x, _mask(0b111111110111, 12))
        assert (skipped - expected).abs().max() > 1e-2 * expected.abs().max()  # skipping a block changes the logits


def test_clip_registry_errors(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    with pytest.raises(ConfigError, match="class_names"):
        load_backbone("clip_vit_b32", class_names=[])
    bad = tmp_path / "not_clip.pt"
    torch.save(resnet18_cifar(width=4).state_dict(), bad)
    with pytest.raises(CheckpointError, match="missing keys: .*visual"):
        load_backbone("clip_vit_b32", checkpoint=bad)
