"""Backbone registry: :func:`load_backbone` builds a skippable backbone by name and loads a checkpoint safely.

Checkpoints are read with ``torch.load(weights_only=True)`` (:func:`adainf_env.fileio.safe_torch_load`): a file that
would need unpickling is refused with :class:`~adainf_env.errors.UnsafeFileError` before any of its payload runs.
A checkpoint whose keys or shapes do not fit the architecture is refused with
:class:`~adainf_env.errors.CheckpointError` naming the missing, unexpected and mismatched keys. Weights are cast to
float32 (the reference checkpoint is stored in float16).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from adainf_env.backbones.base import SkippableBackbone, SkippableBlock
from adainf_env.backbones.checkpoints import load_state_dict_checked, state_dict_of
from adainf_env.backbones.clip_vit import clip_vit_b32
from adainf_env.backbones.resnet_cifar import resnet18_cifar, resnet32_cifar
from adainf_env.errors import CheckpointError, ConfigError
from adainf_env.fileio import safe_torch_load, sha256_file

__all__ = [
    "BACKBONES",
    "SkippableBackbone",
    "SkippableBlock",
    "load_backbone",
    "load_state_dict_checked",
    "resnet18_cifar",
    "resnet32_cifar",
]

BACKBONES: tuple[str, ...] = ("resnet18_cifar", "resnet32_cifar", "clip_vit_b32")

def _num_classes_from(state: Mapping[str, torch.Tensor] | None, default: int) -> int:
    if state is not None and "fc.weight" in state and state["fc.weight"].ndim == 2:
        return int(state["fc.weight"].shape[0])
    return default


def load_backbone(name: str, checkpoint: str | os.PathLike | None = None, *, num_classes: int | None = None,
                  pretrained: str | None = None, class_names: Sequence[str] | None = None,
                  device: str | torch.device = "cpu", **kwargs: Any) -> SkippableBackbone:
    """Build backbone ``name`` (one of :data:`BACKBONES`), load ``checkpoint`` if given, return it in eval mode.

    * ``resnet18_cifar`` / ``resnet32_cifar``: ``num_classes`` defaults to the checkpoint's classifier size (10
      without a checkpoint); extra ``kwargs`` (``width``, ``final_survival``) go to the constructor.
    * ``clip_vit_b32``: ``class_names`` (default CIFAR-10's) build the zero-shot head; ``pretrained`` is an
      open_clip pretrained tag (e.g. ``"openai"``, downloads) — None means random init, or the weights of
      ``checkpoint`` (an open_clip CLIP state dict, ``.pt``/``.bin`` or ``.safetensors``).

    The returned model carries ``.name`` and ``.checkpoint_sha256`` (None without a checkpoint).
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    ckpt_path = Path(checkpoint).expanduser() if checkpoint is not None else None
    digest = None
    if ckpt_path is not None:
        if not ckpt_path.is_file():
            raise CheckpointError(f"{ckpt_path}: no such checkpoint file")
        digest = sha256_file(ckpt_path)

    if name == "clip_vit_b32":
        model: SkippableBackbone = clip_vit_b32(class_names=class_names, pretrained=pretrained,
                                                checkpoint=ckpt_path, **kwargs)
    else:
        if pretrained is not None:
            raise ConfigError(f"{name} has no downloadable pretrained weights; pass checkpoint=PATH "
                              f"(e.g. one written by experiments/train_backbone.py)")
        state = state_dict_of(safe_torch_load(ckpt_path), ckpt_path) if ckpt_path is not None else None
        builder = resnet18_cifar if name == "resnet18_cifar" else resnet32_cifar
        try:
            model = builder(num_classes=num_classes or _num_classes_from(state, 10), **kwargs)
        except TypeError as e:
            raise ConfigError(f"{name}: bad keyword argument ({e})") from None
        if state is not None:
            load_state_dict_checked(model, state, source=str(ckpt_path))
    model.name = name
    model.checkpoint_sha256 = digest
    return model.to(device).eval()
