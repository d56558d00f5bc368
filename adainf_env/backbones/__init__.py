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
from typing import Any, Callable, Mapping, Sequence

import torch

from adainf_env.backbones.base import SkippableBackbone, SkippableBlock
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

_MAX_KEYS_LISTED = 12  # keep error messages readable for ViT-sized key lists


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a raw state dict (reference layout) or a dict holding one under ``state_dict`` / ``model``."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
    raise CheckpointError(f"{path}: not a state dict (expected a mapping of parameter names to tensors, "
                          f"got {type(obj).__name__})")


def _fmt(keys: Sequence[str]) -> str:
    keys = list(keys)
    more = f" … (+{len(keys) - _MAX_KEYS_LISTED} more)" if len(keys) > _MAX_KEYS_LISTED else ""
    return ", ".join(keys[:_MAX_KEYS_LISTED]) + more


def load_state_dict_checked(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str,
                            ignore_missing: Callable[[str], bool] | None = None) -> None:
    """Load ``state`` into ``model`` strictly, float tensors cast to the model's dtype, with a readable error.

    ``ignore_missing`` marks model keys that may legitimately be absent (e.g. a zero-shot head built from text).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not (ignore_missing and ignore_missing(k))]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys: {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt(unexpected)}")
        if mismatched:
            parts.append(f"mismatched shapes: {_fmt(mismatched)}")
        name = getattr(model, "name", type(model).__name__)
        raise CheckpointError(f"{source}: checkpoint does not fit {name} — " + "; ".join(parts))
    cast = {k: (v.to(own[k].dtype) if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(cast, strict=ignore_missing is None)


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
        from adainf_env.backbones.clip_vit import clip_vit_b32

        model: SkippableBackbone = clip_vit_b32(class_names=class_names, pretrained=pretrained,
                                                checkpoint=ckpt_path, **kwargs)
    else:
        if pretrained is not None:
            raise ConfigError(f"{name} has no downloadable pretrained weights; pass checkpoint=PATH "
                              f"(e.g. one written by experiments/train_backbone.py)")
        state = _state_dict_of(safe_torch_load(ckpt_path), ckpt_path) if ckpt_path is not None else None
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
