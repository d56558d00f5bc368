"""CIFAR ResNets with skippable residual branches: ``resnet18_cifar`` and ``resnet32_cifar``.

* ``resnet18_cifar`` — the CIFAR variant of ResNet18 (He et al. 2016, 3×3 stem, no max-pool), exactly the layout of
  ``../shared/reference/resnet18_sd_cifar10.pt`` (keys ``stem.0``, ``stem.1``, ``blocks.i.{conv1,bn1,conv2,bn2}``,
  ``blocks.i.shortcut.{0,1}`` where the shape changes, ``fc``): 8 skippable BasicBlocks.
* ``resnet32_cifar`` — the classic CIFAR ResNet-32 of He et al. 2016 (Sec. 4.2): 3 stages × 5 BasicBlocks with
  16/32/64 channels, 15 skippable blocks. Where the shape changes we use a 1×1 conv + BN projection shortcut
  (He et al.'s option B) rather than zero-padding (option A), so that a skipped block is the same well-defined
  ``relu(shortcut(x))`` as in resnet18_cifar.

Executed block: ``relu(shortcut(x) + bn2(conv2(relu(bn1(conv1(x))))))``; skipped block: ``relu(shortcut(x))``.
Scheduler features: the global-average-pooled stem output (after its ReLU), 64-d for resnet18, 16-d for resnet32
(times ``width / default``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from adainf_env.backbones.base import SkippableBackbone, SkippableBlock
from adainf_env.backbones.stochastic_depth import linear_survival_probs

__all__ = ["BasicBlock", "ResNetCifar", "resnet18_cifar", "resnet32_cifar", "CIFAR10_MEAN", "CIFAR10_STD"]

# Normalisation the reference checkpoint was trained with ([0, 1] RGB; ../shared/README.md).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class BasicBlock(SkippableBlock):
    """Two 3×3 conv-BN layers on the residual branch; identity or 1×1 conv-BN projection shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        proj: nn.Sequential = nn.Sequential()  # empty Sequential = identity, and no state-dict keys
        if stride != 1 or in_ch != out_ch:
            proj = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
        # The checkpoint key is ``shortcut.*`` but ``shortcut`` is also the SkippableBlock method, so the module is
        # registered directly (the method stays reachable as ``self.shortcut``; the module as ``self.proj``).
        self._modules["shortcut"] = proj
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride

    @property
    def proj(self) -> nn.Sequential:
        return self._modules["shortcut"]  # type: ignore[return-value]

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    def combine(self, shortcut: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        return F.relu(shortcut if residual is None else shortcut + residual)


class ResNetCifar(SkippableBackbone):
    """A 3×3-conv stem, a flat list of BasicBlocks, global average pooling and a linear classifier."""

    def __init__(self, *, name: str, stem_width: int, block_specs: Sequence[tuple[int, int, int]], num_classes: int,
                 final_survival: float = 0.5, mean: Sequence[float] = CIFAR10_MEAN,
                 std: Sequence[float] = CIFAR10_STD) -> None:
        super().__init__(num_classes=num_classes, input_size=(3, 32, 32), mean=mean, std=std)
        if num_classes < 1:
            raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
        self.name = name
        # Registered under "stem" (checkpoint keys stem.0 / stem.1); ``stem`` is also the base-class method, hence
        # the direct registration.
        self._modules["stem"] = nn.Sequential(nn.Conv2d(3, stem_width, 3, padding=1, bias=False),
                                              nn.BatchNorm2d(stem_width))
        self.blocks = nn.ModuleList(BasicBlock(i, o, s) for i, o, s in block_specs)
        self.fc = nn.Linear(block_specs[-1][1], num_classes)
        self._init_weights()
        self.set_survival_probs(linear_survival_probs(len(self.blocks), final_survival))

    def _init_weights(self) -> None:
        # He et al. 2015 init for convs, BN at (1, 0): the standard ResNet recipe.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self._modules["stem"](x))

    def features(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=(2, 3))

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(h.mean(dim=(2, 3)))


def _check_width(width: int) -> int:
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    return width


def resnet18_cifar(*, num_classes: int = 10, width: int = 64, final_survival: float = 0.5) -> ResNetCifar:
    """CIFAR ResNet18: 8 BasicBlocks, channels width·(1, 2, 4, 8); ``width=64`` is the reference architecture."""
    w = _check_width(width)
    specs = [(w, w, 1), (w, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1),
             (2 * w, 4 * w, 2), (4 * w, 4 * w, 1), (4 * w, 8 * w, 2), (8 * w, 8 * w, 1)]
    return ResNetCifar(name="resnet18_cifar", stem_width=w, block_specs=specs, num_classes=num_classes,
                       final_survival=final_survival)


def resnet32_cifar(*, num_classes: int = 10, width: int = 16, final_survival: float = 0.5) -> ResNetCifar:
    """CIFAR ResNet-32 (He et al. 2016, 6n+2 with n = 5): 15 BasicBlocks, channels width·(1, 2, 4)."""
    w = _check_width(width)
    specs: list[tuple[int, int, int]] = []
    in_ch = w
    for stage, ch in enumerate((w, 2 * w, 4 * w)):
        for j in range(5):
            stride = 2 if (stage > 0 and j == 0) else 1
            specs.append((in_ch, ch, stride))
            in_ch = ch
    return ResNetCifar(name="resnet32_cifar", stem_width=w, block_specs=specs, num_classes=num_classes,
                       final_survival=final_survival)
