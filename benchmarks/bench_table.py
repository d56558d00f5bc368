"""Prefix-sharing table builder vs one forward per plan, on the same images and plans, in one run.

Default: resnet18_cifar with the reference checkpoint and the first N real CIFAR-10 test images (../shared);
when ../shared is absent, random-init weights and random uint8 images (the speed ratio does not depend on weights).
All 2^8 = 256 plans. Both methods run the same batches with the same threads and memory format; the outputs are
checked to agree exactly before the ratio is reported.

The last output line is a JSON object: ``speedup`` (naive seconds / prefix-sharing seconds; goal ≥ 3), timings,
and the theoretical MACs ratio (Σ_p MACs(p) / Σ_prefixes MACs).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # allow `python benchmarks/bench_table.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from adainf_env.backbones import load_backbone  # noqa: E402
from adainf_env.costs import MacsProfile, measure_macs  # noqa: E402
from adainf_env.data import load_images  # noqa: E402
from adainf_env.plans import all_plans  # noqa: E402
from adainf_env.tables.builder import evaluate_plans, evaluate_plans_per_plan  # noqa: E402
from adainf_lab.cli import parse_config  # noqa: E402

__all__ = ["BenchTableConfig", "main"]

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@dataclasses.dataclass
class BenchTableConfig:
    num_images: int = 64
    batch_size: int = 64
    threads: int = 0  # 0 = torch's default
    shared: str = str(SHARED)  # folder with reference/resnet18_sd_cifar10.pt and data/cifar10-jpg.tgz


def _model_and_images(cfg: BenchTableConfig) -> tuple[torch.nn.Module, np.ndarray, np.ndarray, str]:
    """The reference ResNet18 on real test images when ``cfg.shared`` has them, else random weights and images."""
    shared = Path(cfg.shared)
    ckpt, archive = shared / "reference" / "resnet18_sd_cifar10.pt", shared / "data" / "cifar10-jpg.tgz"
    if ckpt.is_file() and archive.is_file():
        images, labels = load_images(archive, "cifar10", "test")
        return (load_backbone("resnet18_cifar", ckpt), images[: cfg.num_images], labels[: cfg.num_images],
                "reference checkpoint, CIFAR-10 test")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    return (load_backbone("resnet18_cifar"), rng.integers(0, 256, (cfg.num_images, 3, 32, 32), dtype=np.uint8),
            rng.integers(0, 10, cfg.num_images), "random init weights, random images (../shared absent)")


def _timed_table(fn: Callable, model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, masks: np.ndarray,
                 batch_size: int) -> tuple[float, list[torch.Tensor]]:
    """Seconds for ``fn`` over all batches, and its four outputs concatenated over the batches."""
    outs, t0 = [], time.perf_counter()
    for s in range(0, len(images), batch_size):
        x = torch.from_numpy(images[s:s + batch_size]).contiguous(memory_format=torch.channels_last)
        outs.append(fn(model, x, torch.from_numpy(labels[s:s + batch_size]), masks))
    return time.perf_counter() - t0, [torch.cat([o[k] for o in outs]) for k in range(4)]


def _macs_ratio(costs: MacsProfile, masks: np.ndarray) -> float:
    """Work of one forward per plan over work of prefix sharing (stem and head per plan vs each prefix once)."""
    res, sc = costs.blocks[:, 0].astype(float), costs.blocks[:, 1].astype(float)
    naive_macs = sum(costs.base + float(m @ res) for m in masks)
    prefix_macs = costs.stem + sum((2 ** i) * (res[i] + sc[i]) for i in range(len(res))) + len(masks) * costs.head
    return naive_macs / prefix_macs


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(BenchTableConfig, argv, description=__doc__.split("\n\n")[0])
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    model, images, labels, source = _model_and_images(cfg)
    masks = all_plans(model.num_blocks)
    print(f"bench_table: resnet18_cifar ({source}), {len(images)} images, {len(masks)} plans, batch "
          f"{cfg.batch_size}, {torch.get_num_threads()} threads")
    _timed_table(evaluate_plans, model, images, labels, masks, cfg.batch_size)  # warm-up: oneDNN primitive creation
    t_prefix, a = _timed_table(evaluate_plans, model, images, labels, masks, cfg.batch_size)
    print(f"  prefix sharing (DFS):   {t_prefix:8.2f} s")
    t_naive, b = _timed_table(evaluate_plans_per_plan, model, images, labels, masks, cfg.batch_size)
    print(f"  one forward per plan:   {t_naive:8.2f} s")
    same_pred = bool(torch.equal(a[0], b[0]))
    max_loss_diff = float((a[1] - b[1]).abs().max())
    macs_ratio = _macs_ratio(measure_macs(model), masks)
    speedup = t_naive / t_prefix
    print(f"  speedup {speedup:.2f}× (MACs ratio {macs_ratio:.2f}×); predictions identical: {same_pred}")
    print(json.dumps({"speedup": round(speedup, 3), "prefix_s": round(t_prefix, 3), "naive_s": round(t_naive, 3),
                      "macs_ratio": round(macs_ratio, 3), "num_images": len(images),
                      "num_plans": len(masks), "batch_size": cfg.batch_size, "threads": torch.get_num_threads(),
                      "identical_pred": same_pred, "max_loss_diff": max_loss_diff, "source": source}))
    return 0 if same_pred else 1


if __name__ == "__main__":
    sys.exit(main())
