"""Any registered scheduler on a stochastic-depth ResNet18 (CIFAR-10), end to end: ``--algo`` picks it.

    python experiments/train_scheduler.py --algo hinge --table-dir reference
    python experiments/train_scheduler.py --algo reinforce --table-dir reference --epochs 30
    python experiments/train_scheduler.py --algo a2c --scheduler.n-envs 128    # data found → full run; else the demo

Same pipeline and run-directory conventions as ``experiments/ppo_resnet18.py`` (:mod:`adainf_lab.pipeline`): only the
scheduler differs. ``--epochs`` sets the torch learners' training epochs, ``--timesteps`` the SB3 learners' env
steps; held-out calibration rows pick the best checkpoint. ``--scheduler.*`` sets typed scheduler options.
"""

from __future__ import annotations

import dataclasses

from adainf_lab.cli import run_script
from adainf_lab.config import PipelineConfig
from adainf_lab.pipeline import pipeline_main
from adainf_lab.scheduler_options import SchedulerName

__all__ = ["TrainSchedulerConfig", "main"]


@dataclasses.dataclass
class TrainSchedulerConfig(PipelineConfig):
    """Train the scheduler named by --algo end to end and evaluate it against the lut and oracle references."""

    algo: SchedulerName = dataclasses.field(kw_only=True, metadata={"help": "scheduler to train"})


def main(argv: list[str] | None = None) -> dict:
    return pipeline_main(argv, script="train_scheduler.py", config_cls=TrainSchedulerConfig)


if __name__ == "__main__":
    run_script(main)
