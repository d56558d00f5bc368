"""Train a CIFAR ResNet with stochastic depth, resumably (used by ``experiments/train_backbone.py``).

Recipe (the reference checkpoint's, ../shared/README.md): stochastic depth with linearly decaying survival
probability (Huang et al. 2016), SGD with Nesterov momentum, cosine learning-rate schedule (per epoch), random crop
(4-pixel zero padding) + horizontal flip, on the *fit* split only (calibration images stay unseen by the backbone).

Resumability: after every epoch ``resume.pt`` is written atomically with the model, optimizer and scheduler
state, the RNG states (global torch RNG — drop-path masks — and the data generator — shuffling and augmentation) and
the metric history; only tensors and plain containers, so it loads with ``weights_only=True``. Re-running with the
same output directory continues from it and ends with the same weights as an uninterrupted run (CPU, same seed).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from adainf_env.backbones import load_backbone
from adainf_env.errors import CheckpointError, ConfigError
from adainf_env.fileio import atomic_torch_save, atomic_write_json, safe_torch_load

__all__ = ["TrainSettings", "train_backbone", "augment_batch", "evaluate_accuracy"]


@dataclass(frozen=True)
class TrainSettings:
    """Everything that determines the trained weights (hashed to refuse resuming a different run)."""

    backbone: str
    num_classes: int
    width: int | None
    final_survival: float
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    seed: int

    def __post_init__(self) -> None:
        if self.backbone not in ("resnet18_cifar", "resnet32_cifar"):
            raise ConfigError(f"train_backbone trains resnet18_cifar or resnet32_cifar, not {self.backbone!r}")
        for name in ("epochs", "batch_size", "num_classes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.width is not None and self.width < 1:
            raise ConfigError(f"width must be ≥ 1, got {self.width}")
        if not 0.0 < self.final_survival <= 1.0:
            raise ConfigError(f"final_survival must be in (0, 1], got {self.final_survival}")
        if not (self.lr > 0 and 0 <= self.momentum < 1 and self.weight_decay >= 0):
            raise ConfigError("need lr > 0, 0 ≤ momentum < 1, weight_decay ≥ 0")

    def digest(self, data_fingerprint: str) -> str:
        doc = json.dumps({**self.__dict__, "data": data_fingerprint}, sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with ``pad``-pixel zero padding + random horizontal flip, per image, uint8 in → uint8 out."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(x.device)  # [n, h]
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols).to(x.device)  # [n, w]
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)]  # [n, h, w, c]
    return out.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def evaluate_accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 500,
                      device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy (fraction) of the full model in eval mode."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i:i + batch_size]).to(device)
        y = torch.from_numpy(labels[i:i + batch_size]).to(device)
        correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, len(images))


def _rng_state(gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "data": gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train_backbone(settings: TrainSettings, *, fit_images: np.ndarray, fit_labels: np.ndarray,
                   eval_images: np.ndarray, eval_labels: np.ndarray, out: Path, data_fingerprint: str,
                   device: str = "auto", stop_after_epochs: int | None = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) and write ``out/checkpoint.pt`` (state dict), ``out/resume.pt``, ``out/metrics.json``.

    ``eval_*`` is the held-out split used for the per-epoch accuracy (the calibration split: never trained on).
    ``stop_after_epochs`` ends this invocation early (as if killed) after that many *total* epochs; a later call
    resumes. Returns the metrics document.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else torch.device(device)
    if len(fit_images) < settings.batch_size:
        raise ConfigError(f"fit split has {len(fit_images)} images, fewer than batch_size={settings.batch_size}")
    if fit_labels.max() >= settings.num_classes or fit_labels.min() < 0:
        raise ConfigError(f"labels outside [0, {settings.num_classes}) — wrong --dataset for this data?")
    digest = settings.digest(data_fingerprint)

    torch.manual_seed(settings.seed)
    kwargs: dict[str, Any] = {"final_survival": settings.final_survival}
    if settings.width is not None:
        kwargs["width"] = settings.width
    model = load_backbone(settings.backbone, num_classes=settings.num_classes, device=dev, **kwargs)
    # No weight decay on BN parameters and biases (standard for ResNets).
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": settings.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=settings.lr, momentum=settings.momentum, nesterov=settings.momentum > 0)
    steps_per_epoch = len(fit_images) // settings.batch_size  # drop the last partial batch (BN needs > 1 row)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.epochs)
    gen = torch.Generator().manual_seed(settings.seed)
    history: list[dict[str, float]] = []
    start_epoch = 0

    resume_path = out / "resume.pt"
    if resume_path.is_file():
        state = safe_torch_load(resume_path)
        if not isinstance(state, dict) or state.get("digest") != digest:
            raise CheckpointError(f"{resume_path}: was written by a run with different settings or data; use another "
                                  f"--out or delete it to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], gen, dev)
        history = [dict(h) for h in state["history"]]
        start_epoch = int(state["epoch"])
        log(f"resuming {out} from epoch {start_epoch}/{settings.epochs}")

    fit_x = torch.from_numpy(fit_images)
    fit_y = torch.from_numpy(fit_labels.astype(np.int64))
    end_epoch = settings.epochs if stop_after_epochs is None else min(settings.epochs, stop_after_epochs)
    for epoch in range(start_epoch, end_epoch):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(fit_x), generator=gen)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{settings.epochs}", disable=not progress,
                   leave=False)
        for step in bar:
            idx = perm[step * settings.batch_size:(step + 1) * settings.batch_size]
            x = augment_batch(fit_x[idx], gen).to(dev, non_blocking=True)
            y = fit_y[idx].to(dev, non_blocking=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch + 1} step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        sched.step()
        acc = evaluate_accuracy(model, eval_images, eval_labels, device=dev)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                        "eval_acc": acc, "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
        log(f"epoch {epoch + 1}/{settings.epochs}: train loss {loss_sum / seen:.4f}, train acc {correct / seen:.4f}, "
            f"held-out acc {acc:.4f}")
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                           "rng": _rng_state(gen, dev), "history": history, "epoch": epoch + 1, "digest": digest},
                          resume_path)
    done = len(history) >= settings.epochs
    metrics = {"complete": done, "epochs_done": len(history), "history": history, "device": str(dev),
               "final_eval_acc": history[-1]["eval_acc"] if history else math.nan}
    if done:
        atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "checkpoint.pt")
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
