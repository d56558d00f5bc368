"""Reading state dicts into skippable backbones with errors that name the keys that do not fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from adainf_env.errors import CheckpointError

__all__ = ["state_dict_of", "load_state_dict_checked"]

_MAX_KEYS_LISTED = 12  # keep error messages readable for ViT-sized key lists


def state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
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
