"""``clip_vit_b32``: open_clip's CLIP ViT-B/32 image tower as a skippable backbone with a zero-shot head.

Layout (mirrors ``open_clip.transformer.VisionTransformer.forward`` in open_clip 3.3):

* **stem** = patch embedding (``conv1``) → prepend class token → + positional embedding → ``ln_pre``
  (``VisionTransformer._embeds``; patch dropout is inactive at inference);
* **blocks** = the 12 ``ResidualAttentionBlock``s. A block computes ``x + attn(ln_1 x)`` then ``+ mlp(ln_2 ·)``;
  we treat the whole block as one skippable unit: shortcut = identity, residual = ``block(x) − x`` (both sub-layers'
  contributions), so a skipped block passes the token sequence through unchanged;
* **head** = ``ln_post`` → class-token pooling (``pool_type='tok'``) → ``@ proj`` → L2-normalise → cosine similarity
  with the zero-shot classifier (normalised text embeddings of ``"a photo of a {class}."``) × ``logit_scale.exp()``
  — the same logits as ``CLIP.get_logits`` with those prompts.

Scheduler features: the mean over patch tokens of the stem output (768-d). The stem's class token is the same for
every image (it does not depend on the input before the first block), so it carries no information.

Weights: ``pretrained=None`` and no checkpoint → random init (tests; no network). A ``checkpoint`` path → an
open_clip CLIP state dict read safely (``weights_only=True`` or safetensors). ``pretrained="openai"`` (or another
open_clip tag) → open_clip downloads the weights: only when the caller asks for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from adainf_env.backbones.base import SkippableBackbone, SkippableBlock
from adainf_env.backbones.checkpoints import load_state_dict_checked, state_dict_of
from adainf_env.backbones.stochastic_depth import linear_survival_probs
from adainf_env.data import CIFAR10_CLASSES
from adainf_env.errors import CheckpointError, ConfigError
from adainf_env.fileio import safe_torch_load

__all__ = ["ViTBlock", "ClipViT", "build_open_clip", "clip_vit_b32", "zero_shot_classifier", "PROMPT_TEMPLATE", "OPENCLIP_MODEL"]

OPENCLIP_MODEL = "ViT-B-32"
PROMPT_TEMPLATE = "a photo of a {}."
# CLIP's image normalisation (open_clip.constants.OPENAI_DATASET_MEAN / _STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ViTBlock(SkippableBlock):
    """One open_clip ``ResidualAttentionBlock``: identity shortcut, residual = ``block(x) − x``."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) - x

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        # Executed and ungated outside training: run the block as open_clip does (no x + (block(x) − x) round-off).
        if gate is None and not (self.training and self.survival_prob < 1.0):
            return self.block(x)
        return super().forward(x, gate)


@torch.no_grad()
def zero_shot_classifier(clip_model: nn.Module, class_names: Sequence[str], *, model_name: str = OPENCLIP_MODEL,
                         template: str = PROMPT_TEMPLATE) -> torch.Tensor:
    """Normalised text embeddings [C, D] of ``template.format(class)`` (underscores → spaces), open_clip tokenizer."""
    import open_clip

    tokenizer = open_clip.get_tokenizer(model_name)
    prompts = [template.format(str(c).replace("_", " ")) for c in class_names]
    device = next(clip_model.parameters()).device
    return clip_model.encode_text(tokenizer(prompts).to(device), normalize=True).float()


class ClipViT(SkippableBackbone):
    """CLIP image tower split into stem / 12 skippable blocks / zero-shot head (see module docstring)."""

    def __init__(self, clip_model: nn.Module, class_names: Sequence[str], *, model_name: str = OPENCLIP_MODEL,
                 final_survival: float = 1.0) -> None:
        visual = clip_model.visual
        if getattr(visual, "attn_pool", None) is not None or not hasattr(visual, "transformer"):
            raise ConfigError(f"{model_name}: only plain ViT image towers (no attentional pooling) are supported")
        size = tuple(visual.image_size)
        super().__init__(num_classes=len(class_names), input_size=(3, size[0], size[1]), mean=CLIP_MEAN, std=CLIP_STD)
        self.name = "clip_vit_b32"
        self.model_name = model_name
        self.class_names = tuple(str(c) for c in class_names)
        # Stem pieces (open_clip names kept, so state-dict keys read like the original's visual.*).
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.ln_pre = visual.ln_pre
        self.blocks = nn.ModuleList(ViTBlock(b) for b in visual.transformer.resblocks)
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        self.pool_type = visual.pool_type
        self.final_ln_after_pool = bool(visual.final_ln_after_pool)
        self.register_buffer("classifier", zero_shot_classifier(clip_model, self.class_names, model_name=model_name))
        self.register_buffer("logit_scale", clip_model.logit_scale.detach().exp().float().reshape(()))
        bias = getattr(clip_model, "logit_bias", None)
        self.register_buffer("logit_bias", None if bias is None else bias.detach().float().reshape(()))
        self.set_survival_probs(linear_survival_probs(len(self.blocks), final_survival))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # [N, width, grid, grid]
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [N, grid², width]
        cls = self.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(x)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, 1:].mean(dim=1)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        if self.final_ln_after_pool:
            pooled = self.ln_post(self._pool(h))
        else:
            pooled = self._pool(self.ln_post(h))
        if self.proj is not None:
            pooled = pooled @ self.proj
        logits = self.logit_scale * F.normalize(pooled, dim=-1) @ self.classifier.T
        return logits if self.logit_bias is None else logits + self.logit_bias

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            return h[:, 1:].mean(dim=1)
        if self.pool_type == "tok":
            return h[:, 0]
        raise ConfigError(f"{self.model_name}: pool_type {self.pool_type!r} not supported")


def _load_clip_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: unreadable safetensors checkpoint ({e})") from None
    return state_dict_of(safe_torch_load(path), path)


def build_open_clip(*, model_name: str = OPENCLIP_MODEL, pretrained: str | None = None,
                    checkpoint: str | os.PathLike | None = None, quick_gelu: bool | None = None) -> nn.Module:
    """The open_clip CLIP model (eval mode, float32, CPU) with random, checkpoint or downloaded-tag weights."""
    import open_clip

    if pretrained is not None and checkpoint is not None:
        raise ConfigError("give either pretrained=<open_clip tag> (downloads) or checkpoint=<path>, not both")
    if quick_gelu is None:
        # OpenAI's CLIP weights were trained with QuickGELU; open_clip's plain ViT-B-32 config uses nn.GELU.
        quick_gelu = pretrained == "openai"
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, force_quick_gelu=quick_gelu,
                                       pretrained_text=False, require_pretrained=pretrained is not None)
    except RuntimeError as e:
        raise ConfigError(f"open_clip could not create {model_name} (pretrained={pretrained!r}): {e}") from None
    if checkpoint is not None:
        state = _load_clip_state(Path(checkpoint))
        if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
            state = {k[len("module."):]: v for k, v in state.items()}
        load_state_dict_checked(model, state, source=str(checkpoint))
    return model.float().eval()


def clip_vit_b32(*, class_names: Sequence[str] | None = None, pretrained: str | None = None,
                 checkpoint: str | os.PathLike | None = None, quick_gelu: bool | None = None,
                 final_survival: float = 1.0, **kwargs: Any) -> ClipViT:
    """CLIP ViT-B/32 with 12 skippable blocks and a zero-shot head over ``class_names`` (default: CIFAR-10's).

    ``final_survival`` < 1 enables stochastic depth when fine-tuning (pretrained CLIP was trained without it).
    """
    if kwargs:
        raise ConfigError(f"clip_vit_b32: unknown arguments {sorted(kwargs)}")
    if class_names is None:
        class_names = CIFAR10_CLASSES
    class_names = list(class_names)
    if not class_names or not all(isinstance(c, str) and c for c in class_names):
        raise ConfigError("class_names must be a non-empty list of non-empty strings")
    clip_model = build_open_clip(pretrained=pretrained, checkpoint=checkpoint, quick_gelu=quick_gelu)
    return ClipViT(clip_model, class_names, final_survival=final_survival).eval()
