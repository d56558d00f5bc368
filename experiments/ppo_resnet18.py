"""PPO scheduler on a stochastic-depth ResNet18 (CIFAR-10), end to end — the first command of the README.

    python experiments/ppo_resnet18.py                                   # data found → full run; else the offline demo
    python experiments/ppo_resnet18.py --table-dir ../shared/reference   # from prebuilt tables (≈ 1–2 min on 2 cores)
    python experiments/ppo_resnet18.py --data ~/data --checkpoint ckpt.pt

Pipeline (:mod:`adainf_lab.pipeline`): data → backbone (trained with stochastic depth, or ``--checkpoint``) → calibration
and test outcome tables (cached, reused) → PPO on the calibration table → test evaluation against ``lut`` (plan
chosen on calibration) and ``oracle`` (a bound) → ``results.json`` (records of :mod:`agents.evaluation.harness`), CSV, PNGs,
TensorBoard events (``tensorboard --logdir runs``) and ``config.json`` (config + git revision) in the run directory.
With no data and no network it runs a real, small demo on the CIFAR-10 sample shipped in the package and says so.
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

if __package__ in (None, ""):  # allow `python experiments/ppo_resnet18.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adainf_lab.pipeline import PipelineConfig  # noqa: E402

__all__ = ["PPOResNet18Config", "main"]


@dataclasses.dataclass
class PPOResNet18Config(PipelineConfig):
    """PPO scheduler on a stochastic-depth ResNet18 (CIFAR-10): data → backbone → tables → PPO → evaluation."""

    algo: str = dataclasses.field(default="ppo", metadata={"help": "SB3 algorithm (ppo, a2c, dqn, maskable_ppo)"})


def main(argv: list[str] | None = None) -> dict:
    from adainf_lab.cli import parse_config
    from adainf_lab.pipeline import run_pipeline

    cfg = parse_config(PPOResNet18Config, argv)
    return run_pipeline(cfg, script="ppo_resnet18.py")


if __name__ == "__main__":
    from adainf_env.errors import AdaInfError

    try:
        main()
    except AdaInfError as e:  # bad input: one clear line, no traceback
        sys.exit(f"error: {e}")
