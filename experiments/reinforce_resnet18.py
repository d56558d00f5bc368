"""REINFORCE scheduler (self-critical baseline, entropy bonus) on a stochastic-depth ResNet18 (CIFAR-10), end to end.

    python experiments/reinforce_resnet18.py                                   # data found → full run; else the offline demo
    python experiments/reinforce_resnet18.py --table-dir ../shared/reference   # from prebuilt tables

Same pipeline and run-directory conventions as ``experiments/ppo_resnet18.py`` (:mod:`adainf_lab.pipeline`): only the
scheduler differs. ``--epochs`` sets the learner's training epochs (held-out calibration rows pick the best epoch).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

# On a shared or busy CPU, OpenMP threads that spin while waiting burn the cores other threads need (measured here on
# a loaded 2-core machine: backbone training with 2 spinning threads was several times slower than with 1); passive
# waiting costs little when the machine is idle. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):  # allow `python experiments/reinforce_resnet18.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adainf_lab.pipeline import PipelineConfig  # noqa: E402

__all__ = ["ReinforceResNet18Config", "main"]


@dataclasses.dataclass
class ReinforceResNet18Config(PipelineConfig):
    """REINFORCE scheduler (self-critical baseline, entropy bonus) on a stochastic-depth ResNet18 (CIFAR-10), end to end."""

    algo: str = dataclasses.field(default="reinforce", metadata={"help": "torch learner (reinforce, blockdrop, hinge) or any registry name"})


def main(argv: list[str] | None = None) -> dict:
    from adainf_lab.cli import parse_config
    from adainf_lab.pipeline import run_pipeline

    cfg = parse_config(ReinforceResNet18Config, argv)
    return run_pipeline(cfg, script="reinforce_resnet18.py")


if __name__ == "__main__":
    from adainf_env.errors import AdaInfError

    try:
        main()
    except AdaInfError as e:  # bad input: one clear line, no traceback
        sys.exit(f"error: {e}")
