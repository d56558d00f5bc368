"""Tiny SkippableBackbones for fast tests of the cost model and the table builder (random init, CPU, < 1 ms)."""

from __future__ import annotations

import torch
from torch import nn

from adainf_env.backbones.base import SkippableBackbone, SkippableBlock

__all__ = ["TinyResNet", "TinyTokenNet"]


class _Basic(SkippableBlock):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def residual(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))

    def shortcut(self, x):
        return x if self.proj is None else self.proj(x)

    def combine(self, shortcut, residual):
        return torch.relu(shortcut if residual is None else shortcut + residual)


class TinyResNet(SkippableBackbone):
    """CIFAR-style ResNet in miniature: identity and projection blocks, BN with random running statistics."""

    name = "tiny_resnet"

    def __init__(self, num_blocks: int = 4, num_classes: int = 5, width: int = 4, seed: int = 0) -> None:
        super().__init__(num_classes=num_classes, input_size=(3, 8, 8), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        g = torch.Generator().manual_seed(seed)
        self.stem_net = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks, c = [], width
        for i in range(num_blocks):
            cout, stride = (c * 2, 2) if i in (1, 3) else (c, 1)
            blocks.append(_Basic(c, cout, stride))
            c = cout
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(c, num_classes)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                elif isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
        self.eval()

    def stem(self, x):
        return self.stem_net(x)

    def features(self, h):
        return h.mean(dim=(2, 3))

    def head(self, h):
        return self.fc(h.mean(dim=(2, 3)))


class _MLPBlock(SkippableBlock):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.mlp = nn.Linear(d, d)

    def residual(self, x):
        q, k, v = self.qkv(self.ln(x)).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1) @ v
        return self.mlp(a)


class TinyTokenNet(SkippableBackbone):
    """Transformer-shaped backbone (patch conv → token blocks with attention matmuls → linear head)."""

    name = "tiny_tokens"

    def __init__(self, num_blocks: int = 3, num_classes: int = 300, d: int = 8) -> None:
        super().__init__(num_classes=num_classes, input_size=(3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
        torch.manual_seed(1)
        self.patch = nn.Conv2d(3, d, 4, 4)
        self.blocks = nn.ModuleList(_MLPBlock(d) for _ in range(num_blocks))
        self.fc = nn.Linear(d, num_classes)
        self.eval()

    def stem(self, x):
        return self.patch(x).flatten(2).transpose(1, 2)  # [N, 4 tokens, d]

    def features(self, h):
        return h.mean(dim=1)

    def head(self, h):
        return self.fc(h.mean(dim=1))
