"""PPO scheduler on a stochastic-depth ResNet18 (CIFAR-10), end to end — the first command of the README.

    python experiments/ppo_resnet18.py                          # data found → full run; else the offline demo
    python experiments/ppo_resnet18.py --table-dir reference    # from the reference tables shipped in the package
    python experiments/ppo_resnet18.py --data ~/data --checkpoint ckpt.pt

Pipeline (:mod:`adainf_lab.pipeline`): data → backbone (trained with stochastic depth, or ``--checkpoint``) →
calibration and test outcome tables (cached, and left in ``<run>/tables``) → PPO on the calibration table → test
evaluation against ``lut`` (plan chosen on calibration) and ``oracle`` (a bound) → ``results.json`` (records of
:mod:`agents.evaluation.harness`), CSV, PNGs, TensorBoard events (``tensorboard --logdir runs``) and ``config.json``
(the configuration as it ran + git revision) in the run directory. With no data and no network it runs a real, small
demo on the CIFAR-10 sample shipped in the package and says so. Any other scheduler: ``train_scheduler.py --algo``.
"""

from __future__ import annotations

from adainf_lab.cli import run_script
from adainf_lab.pipeline import pipeline_main

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict:
    return pipeline_main(argv, script="ppo_resnet18.py")


if __name__ == "__main__":
    run_script(main)
