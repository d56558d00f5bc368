"""A budget-aware scheduler on a stochastic-depth ResNet-32 (CIFAR-100), end to end.

    python experiments/resnet32_cifar100.py --data ~/data            # a torchvision root holding CIFAR-100
    python experiments/resnet32_cifar100.py --download               # let torchvision download it (network)
    python experiments/resnet32_cifar100.py --data ~/data --checkpoint resnet32.pt --algo ppo

Same pipeline and run-directory conventions as ``experiments/ppo_resnet18.py`` (:mod:`adainf_lab.pipeline`). ResNet-32 has
15 skippable blocks: 2^15 plans are too many to table, so the tables hold the documented structured + sampled subset
of :func:`adainf_env.tables.builder.structured_plan_subset` (``--num-random-plans``). There is no offline demo for
CIFAR-100: with no data this script stops with a DataSourceError naming the options.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from adainf_env.backbones import load_backbone
from adainf_env.errors import ConfigError
from adainf_env.tables.builder import structured_plan_subset
from adainf_lab.cli import parse_config, run_script
from adainf_lab.config import PipelineConfig
from adainf_lab.pipeline import run_pipeline
from adainf_lab.scheduler_options import SchedulerName

__all__ = ["ResNet32Cifar100Config", "main"]


@dataclasses.dataclass
class ResNet32Cifar100Config(PipelineConfig):
    """A budget-aware scheduler on a stochastic-depth ResNet-32 (CIFAR-100), end to end."""

    algo: SchedulerName = dataclasses.field(default="hinge", metadata={"help": "scheduler to train"})
    backbone: Literal["resnet18_cifar", "resnet32_cifar", "clip_vit_b32"] = dataclasses.field(
        default="resnet32_cifar", metadata={"help": "backbone"})
    dataset: Literal["cifar10", "cifar100", "imagenet", "imagefolder"] = dataclasses.field(
        default="cifar100", metadata={"help": "dataset"})
    width: int = dataclasses.field(default=16, metadata={"help": "ResNet-32 width (16 = He et al. 2016)"})
    train_epochs: int = dataclasses.field(default=160, metadata={"help": "backbone training epochs"})
    num_random_plans: int = dataclasses.field(default=200, metadata={
        "help": "sampled plans added to the structured subset (prefixes, suffixes, leave-one-out, …)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_random_plans < 0:
            raise ConfigError(f"--num-random-plans must be ≥ 0, got {self.num_random_plans}")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ResNet32Cifar100Config, argv, raise_errors=True)
    masks = None
    if cfg.table_dir is None:
        num_blocks = load_backbone(cfg.backbone, width=cfg.width).num_blocks
        masks = structured_plan_subset(num_blocks, cfg.num_random_plans, seed=0)
    return run_pipeline(cfg, allow_demo=False, script="resnet32_cifar100.py", plan_masks=masks,
                        full_command="python experiments/resnet32_cifar100.py --data ROOT (or --download)")


if __name__ == "__main__":
    run_script(main)
