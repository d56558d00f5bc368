"""Build an outcome table (every plan × every sample of one split) for a backbone and save it as ``.npz``.

Example (the acceptance command of the foundation issue)::

    python experiments/build_table.py --backbone resnet18_cifar \
        --checkpoint ../shared/reference/resnet18_sd_cifar10.pt --data ../shared/data/cifar10-jpg.tgz \
        --split test --limit 200 --out OUT.npz

Splits: ``test`` is the dataset's test split; ``calib`` / ``fit`` are the deterministic partition of the train split
of :func:`adainf_env.data.make_splits` (``--split-seed``, ``--num-calib``), or, with ``--reference-calib PATH``
(e.g. ``../shared/reference/calib_indices.npy``), exactly the reference calibration indices.
Plan spaces: ``all`` (2^B plans; B ≤ 10) or ``structured`` (:func:`adainf_env.table_builder.structured_plan_subset`).
The build checkpoints to ``OUT.resume.npz`` and, if killed, continues from there when run again with the same
arguments; the checkpoint is deleted once the table is written (atomically).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["BuildTableConfig", "main", "run"]


@dataclasses.dataclass
class BuildTableConfig:
    backbone: str = "resnet18_cifar"  # adainf_env.backbones.BACKBONES
    checkpoint: Optional[str] = None  # backbone weights (.pt state dict); None = random init (smoke tests only)
    data: Optional[str] = None  # archive (.tgz), torchvision root or image-folder root
    dataset: str = "cifar10"
    split: str = "test"  # test | calib | fit
    limit: Optional[int] = None  # first LIMIT samples of the split
    out: str = "table.npz"
    plans: str = "all"  # all | structured
    num_random: int = 200  # random plans added to the structured subset
    plan_seed: int = 0
    split_seed: int = 0
    num_calib: int = 10_000
    reference_calib: Optional[str] = None  # e.g. ../shared/reference/calib_indices.npy
    batch_size: int = 256
    device: str = "cpu"
    float_dtype: str = "float32"  # loss / conf precision: float32 | float16
    checkpoint_every: int = 4  # batches between resume checkpoints
    resume: bool = True
    download: bool = False  # let torchvision download CIFAR when --data is a root without it
    threads: Optional[int] = None  # torch intra-op threads (default: torch's choice)
    progress: bool = True


def _select_split(cfg: BuildTableConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    from adainf_env.data import load_images, make_splits
    from adainf_env.errors import ConfigError

    if cfg.split not in ("test", "calib", "fit"):
        raise ConfigError(f"--split must be test, calib or fit, got {cfg.split!r}")
    source_split = "test" if cfg.split == "test" else "train"
    images, labels = load_images(cfg.data, cfg.dataset, source_split, download=cfg.download)
    info: dict = {"source_split": source_split}
    if cfg.split == "test":
        index = np.arange(len(labels), dtype=np.int64)
    else:
        splits = make_splits(len(labels), seed=cfg.split_seed, num_calib=cfg.num_calib,
                             reference_calib_indices=cfg.reference_calib)
        index = splits[cfg.split]
        info.update(split_seed=cfg.split_seed if cfg.reference_calib is None else None,
                    calib_source="reference" if cfg.reference_calib else f"make_splits(seed={cfg.split_seed})")
    if cfg.limit is not None:
        if cfg.limit < 1:
            raise ConfigError(f"--limit must be ≥ 1, got {cfg.limit}")
        index = index[: cfg.limit]
    return images[index], labels[index], index, info


def run(cfg: BuildTableConfig) -> Path:
    import torch

    from adainf_env.backbones import load_backbone
    from adainf_env.errors import ConfigError
    from adainf_env.outcomes import save_table
    from adainf_env.table_builder import build_table, structured_plan_subset

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    model = load_backbone(cfg.backbone, cfg.checkpoint, device=cfg.device)
    images, labels, index, info = _select_split(cfg)
    if cfg.plans == "all":
        masks, plan_space = None, "all"
    elif cfg.plans == "structured":
        masks = structured_plan_subset(model.num_blocks, cfg.num_random, cfg.plan_seed)
        plan_space = f"structured_subset(num_blocks={model.num_blocks}, num_random={cfg.num_random}, " \
                     f"seed={cfg.plan_seed})"
    else:
        raise ConfigError(f"--plans must be 'all' or 'structured', got {cfg.plans!r}")
    meta = {"checkpoint_sha256": model.checkpoint_sha256, "dataset": cfg.dataset, "split": cfg.split,
            "plan_space": plan_space, "data_source": Path(cfg.data).name if cfg.data else None, **info}
    resume_path = out.with_name(out.name + ".resume.npz") if cfg.resume else None
    t0 = time.perf_counter()
    table = build_table(model, images, labels, sample_index=index, plan_masks=masks, batch_size=cfg.batch_size,
                        device=cfg.device, meta=meta, progress=cfg.progress, resume_path=resume_path,
                        checkpoint_every=cfg.checkpoint_every, float_dtype=cfg.float_dtype)
    wall = time.perf_counter() - t0
    save_table(table, out)
    if resume_path is not None:
        resume_path.unlink(missing_ok=True)
    acc = table.accuracy_by_plan()
    print(f"wrote {out}: {table.num_samples} samples × {table.num_plans} plans in {wall:.1f} s "
          f"(full-plan accuracy {acc[table.full_plan()] * 100:.2f} %)" if table.plan_masks.all(1).any()
          else f"wrote {out}: {table.num_samples} samples × {table.num_plans} plans in {wall:.1f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    from adainf_env.errors import AdaInfError

    from adainf_lab.cli import parse_config

    cfg = parse_config(BuildTableConfig, argv, description=__doc__.split("\n\n")[0])
    try:
        run(cfg)
    except AdaInfError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
