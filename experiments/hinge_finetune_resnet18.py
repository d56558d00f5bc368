"""The AdaInf scheduler as published: g(x, M) trained live with the reference ResNet18 — frozen, LoRA or fully
fine-tuned — on real CIFAR-10, evaluated under hard per-request budgets against the LUT, its upper curve, BlockDrop
and the LUT re-chosen on the fine-tuned backbone.

    python experiments/hinge_finetune_resnet18.py --finetune full --data ../shared/data/cifar10-jpg.tgz \\
        --checkpoint ../shared/reference/resnet18_sd_cifar10.pt \\
        --calib-indices ../shared/reference/calib_indices.npy --reference-tables ../shared/reference
    # the CPU preset (default) is sized for ≤ 45 min per mode on 2 cores; --preset gpu: the full configuration
    python experiments/hinge_finetune_resnet18.py --combine runs/A runs/B runs/C --out runs/combined   # one figure

Protocol, splits and records: :mod:`adainf_lab.finetune`. Run directory: config.json (config + git revision),
results.json / .csv, summary.md, accuracy_vs_budget.png, TensorBoard events, run_summary.json (stage timings, full-plan
accuracy before/after), the fine-tuned backbone and policy, the fine-tuned backbone's calib (and test) outcome tables
(usable by every table scheduler: ``experiments/compare_schedulers.py``), checkpoints/last.pt (resumable: rerun with
the same --out after a kill).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Spinning OpenMP threads burn the cores other threads need on a shared CPU; must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):  # allow `python experiments/hinge_finetune_resnet18.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adainf_lab.finetune import FinetuneConfig  # noqa: E402

__all__ = ["FinetuneConfig", "main"]


def main(argv: list[str] | None = None) -> dict:
    from adainf_env.errors import ConfigError
    from adainf_lab.cli import parse_config
    from adainf_lab.finetune import combine_runs, run_finetune

    cfg = parse_config(FinetuneConfig, argv)
    if cfg.combine:
        if cfg.out is None:
            raise ConfigError("--combine needs --out (the directory for the combined results and figure)")
        return combine_runs(cfg.combine, cfg.out, plots=cfg.plots)
    return run_finetune(cfg)


if __name__ == "__main__":
    from adainf_lab.cli import run_script

    run_script(main)  # bad input: one `error:` line, exit status 2
