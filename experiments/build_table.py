"""Build an outcome table (every plan × every sample of one split) for a backbone and save it as ``.npz``.

Example::

    python experiments/build_table.py --backbone resnet18_cifar \
        --checkpoint ../shared/reference/resnet18_sd_cifar10.pt --data ../shared/data/cifar10-jpg.tgz \
        --split test --limit 200 --out OUT.npz

Splits: ``test`` is the dataset's test split; ``calib`` / ``fit`` are the deterministic partition of the train split
of :func:`adainf_env.data.make_splits` (``--split-seed``, ``--num-calib``), or, with ``--reference-calib PATH``
(e.g. ``../shared/reference/calib_indices.npy``), exactly the reference calibration indices.
Plan spaces: ``all`` (2^B plans; B ≤ 10) or ``structured`` (:func:`adainf_env.tables.builder.structured_plan_subset`).

Scaling out: the same command under ``torchrun --nproc_per_node=K`` (``--device cuda``: one GPU per process; several
machines: ``--nnodes``, with ``--out`` on a filesystem all nodes share) builds the table in K shards and merges them
into the table one process builds (same content hash), see :mod:`adainf_env.tables.shards`. Every batch is saved
atomically in ``OUT.shards/`` as it completes: a killed build, run again with the same arguments and process count,
redoes only the missing batches; the directory is deleted once the table is written (atomically).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Optional

if __package__ in (None, ""):  # allow `python experiments/build_table.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from adainf_env.backbones import load_backbone  # noqa: E402
from adainf_env.data import load_images, make_splits  # noqa: E402
from adainf_env.errors import AdaInfError, ConfigError  # noqa: E402
from adainf_env.tables.outcomes import OutcomeTable, save_table  # noqa: E402
from adainf_env.tables.builder import BuildInputs, prepare_build_inputs, structured_plan_subset  # noqa: E402
from adainf_env.tables.shards import (  # noqa: E402
    ShardLayout,
    build_shard,
    merge_shards,
    remove_shards,
    run_identity,
    shard_dir_for,
)
from adainf_lab.cli import parse_config  # noqa: E402
from adainf_lab.distributed import DistEnv, barrier, process_group, rank_device  # noqa: E402

__all__ = ["BuildTableConfig", "main", "run"]


@dataclasses.dataclass
class BuildTableConfig:
    backbone: str = "resnet18_cifar"  # adainf_env.backbones.BACKBONES
    checkpoint: Optional[str] = None  # backbone weights (.pt state dict); None = random init, seed 0 (smoke tests)
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
    device: str = "cpu"  # cpu | cuda (under torchrun: cuda:LOCAL_RANK) | cuda:N
    float_dtype: str = "float32"  # loss / conf precision: float32 | float16
    resume: bool = True  # keep the batches of an earlier, killed run of this --out (else start over)
    download: bool = False  # let torchvision download CIFAR when --data is a root without it
    threads: Optional[int] = None  # torch intra-op threads (default: torch's choice)
    progress: bool = True


def _select_split(cfg: BuildTableConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
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


def _plan_space(cfg: BuildTableConfig, num_blocks: int) -> tuple[Optional[np.ndarray], str]:
    """The plan masks (None = all 2^B) and the plan-space name stamped into the table."""
    if cfg.plans == "all":
        return None, "all"
    if cfg.plans == "structured":
        masks = structured_plan_subset(num_blocks, cfg.num_random, cfg.plan_seed)
        return masks, f"structured_subset(num_blocks={num_blocks}, num_random={cfg.num_random}, seed={cfg.plan_seed})"
    raise ConfigError(f"--plans must be 'all' or 'structured', got {cfg.plans!r}")


def _summary_line(table: OutcomeTable, out: Path, wall: float) -> str:
    line = f"wrote {out}: {table.num_samples} samples × {table.num_plans} plans in {wall:.1f} s"
    if table.plan_masks.all(1).any():
        line += f" (full-plan accuracy {table.accuracy_by_plan()[table.full_plan()] * 100:.2f} %)"
    return line


def _prepare_inputs(cfg: BuildTableConfig, device: torch.device) -> tuple[torch.nn.Module, BuildInputs, dict]:
    """The backbone on ``device``, the validated build inputs and the table metadata of ``cfg``."""
    torch.manual_seed(0)  # a random-init backbone (no --checkpoint) is then the same on every rank
    model = load_backbone(cfg.backbone, cfg.checkpoint, device=device)
    images, labels, index, info = _select_split(cfg)
    masks, plan_space = _plan_space(cfg, model.num_blocks)
    meta: dict[str, Any] = {"checkpoint_sha256": model.checkpoint_sha256, "dataset": cfg.dataset,
                            "split": cfg.split, "plan_space": plan_space,
                            "data_source": Path(cfg.data).name if cfg.data else None, **info}
    inputs = prepare_build_inputs(model, images, labels, sample_index=index, plan_masks=masks,
                                  batch_size=cfg.batch_size, float_dtype=cfg.float_dtype, channels_last=True,
                                  meta=meta)
    return model, inputs, meta


def run(cfg: BuildTableConfig) -> Path:
    """Build this process's shard of the table of ``cfg``; rank 0 merges the shards and writes ``cfg.out``."""
    env = DistEnv.from_environ()
    device = rank_device(cfg.device, env)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    model, inputs, meta = _prepare_inputs(cfg, device)
    identity = run_identity(model, inputs, device=device, meta=meta, world_size=env.world_size)
    shards = shard_dir_for(out)
    if env.is_main and inputs.num_batches < env.world_size:
        print(f"warning: {inputs.num_batches} batch(es) for {env.world_size} processes: "
              f"{env.world_size - inputs.num_batches} process(es) stay idle; pass --batch-size ≤ "
              f"{-(-inputs.num_rows // env.world_size)} to give every process rows", file=sys.stderr)
    t0 = time.perf_counter()
    with process_group(env, device) as backend:
        if not cfg.resume:
            if env.is_main:
                remove_shards(shards)
            barrier(device)
        report = build_shard(model, inputs, shard_dir=shards, identity=identity,
                             layout=ShardLayout(world_size=env.world_size, rank=env.rank), device=device,
                             progress=cfg.progress)
        print(f"rank {env.rank}/{env.world_size} ({device}): {report.batches_built} batches built, "
              f"{report.batches_reused} kept from an earlier run, {report.rows_built} rows in "
              f"{report.seconds:.1f} s ({report.rows_per_s:.1f} rows/s)", file=sys.stderr)
        barrier(device)
        if env.is_main:
            build = {"world_size": env.world_size, "device": str(device), "backend": backend,
                     "threads_per_process": torch.get_num_threads(), "seconds": round(time.perf_counter() - t0, 3)}
            table = merge_shards(model, inputs, shard_dir=shards, identity=identity, meta={**meta, "build": build})
            save_table(table, out)
            remove_shards(shards)
            print(_summary_line(table, out, time.perf_counter() - t0))
        barrier(device)  # no rank exits (ending the launch) before the table is on disk
    return out


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(BuildTableConfig, argv, description=__doc__.split("\n\n")[0])
    try:
        run(cfg)
    except AdaInfError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
