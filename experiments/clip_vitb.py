"""Live zero-shot CLIP ViT-B/32 with 12 skippable transformer blocks: tables from the real model, a scheduler, results.

    python experiments/clip_vitb.py --pretrained ViT-B-32.pt --data ~/imagenet --dataset imagenet --test-limit 2000
    python experiments/clip_vitb.py --pretrained ViT-B-32.pt --data cifar10-jpg.tgz
    python experiments/clip_vitb.py                      # no weights given: random weights, tiny subset — SAYS SO

The backbone runs live on real images (resized to 224×224): the zero-shot head is built from the class names with
open_clip's tokenizer ("a photo of a {class}."), the outcome tables are built from the live model over a documented
plan subset (:func:`adainf_env.tables.builder.structured_plan_subset`; 2^12 plans are too many), then the scheduler is
fitted on the calibration table and evaluated against ``lut`` and ``oracle`` as in ``ppo_resnet18.py``.

``--pretrained PATH`` is an open_clip CLIP ViT-B/32 state dict (``.pt`` / ``.bin`` / ``.safetensors``, read without
unpickling). Nothing is downloaded. Without it the model has **random weights**: accuracy is chance level and the run
only exercises the code path, on a tiny subset — the script prints this loudly and marks the run and its plots.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from adainf_env.errors import ConfigError
from adainf_env.tables.builder import structured_plan_subset
from adainf_lab.cli import parse_config, run_script
from adainf_lab.config import PipelineConfig
from adainf_lab.pipeline import run_pipeline
from adainf_lab.scheduler_options import SchedulerName

__all__ = ["ClipViTBConfig", "main", "RANDOM_SUBSET"]

#: Sizes of the random-weights run (it only exercises the code path, so it is kept small).
RANDOM_SUBSET = {"calib": 32, "test": 32, "num_plans": 24, "epochs": 5}


@dataclasses.dataclass
class ClipViTBConfig(PipelineConfig):
    """Live zero-shot CLIP ViT-B/32 with skippable blocks: outcome tables from the real model, scheduler, evaluation."""

    algo: SchedulerName = dataclasses.field(default="hinge", metadata={"help": "scheduler to train"})
    backbone: Literal["clip_vit_b32"] = dataclasses.field(default="clip_vit_b32", metadata={"help": "backbone"})
    pretrained: Path | None = dataclasses.field(default=None, metadata={
        "help": "open_clip ViT-B/32 weights file; without it: random weights on a tiny subset (said loudly)"})
    num_random_plans: int = dataclasses.field(default=100, metadata={
        "help": "sampled plans added to the structured subset (with random weights: only the first "
                f"{RANDOM_SUBSET['num_plans']} structured plans)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.checkpoint is not None and self.checkpoint != self.pretrained:  # main() passes --pretrained on
            raise ConfigError("use --pretrained PATH for CLIP weights (--checkpoint is for trained CIFAR ResNets)")
        if self.pretrained is not None and not Path(self.pretrained).is_file():
            raise ConfigError(f"--pretrained {self.pretrained}: no such file")
        if self.num_random_plans < 0:
            raise ConfigError(f"--num-random-plans must be ≥ 0, got {self.num_random_plans}")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ClipViTBConfig, argv, raise_errors=True)
    random_weights = cfg.pretrained is None
    n_random = cfg.num_random_plans
    if random_weights:
        cfg.calib_limit = cfg.calib_limit or RANDOM_SUBSET["calib"]
        cfg.test_limit = cfg.test_limit or RANDOM_SUBSET["test"]
        cfg.epochs = cfg.epochs or RANDOM_SUBSET["epochs"]
        bar = "!" * 100
        print(f"{bar}\n!! NO PRETRAINED CLIP WEIGHTS GIVEN (--pretrained PATH): running CLIP ViT-B/32 with RANDOM "
              f"WEIGHTS\n!! on a tiny subset ({cfg.calib_limit} calibration + {cfg.test_limit} test images, "
              f"{RANDOM_SUBSET['num_plans']} structured plans: full, none, the 11 prefixes and 11 suffixes).\n"
              f"!! Accuracies are chance level; this run only exercises the live zero-shot code path. Nothing is "
              f"downloaded.\n{bar}", flush=True)
    cfg.checkpoint = cfg.pretrained  # the pipeline loads backbone weights from cfg.checkpoint
    masks = structured_plan_subset(12, n_random, seed=0)
    if random_weights:  # the first plans of the documented order share long prefixes: cheap to table live on a CPU
        masks = masks[: RANDOM_SUBSET["num_plans"]]
    return run_pipeline(
        cfg, script="clip_vitb.py", plan_masks=masks,
        extra_config={"random_weights": random_weights, "num_plans": int(masks.shape[0])},
        title_note="RANDOM WEIGHTS — " if random_weights else "",
        full_command="python experiments/clip_vitb.py --pretrained ViT-B-32.pt --data DATA",
        demo_description=(f"live CLIP ViT-B/32 (zero-shot head from the CIFAR-10 class names), outcome tables over "
                          f"{masks.shape[0]} plans, {cfg.algo} fitted on the calibration table and evaluated against "
                          f"lut and oracle"))


if __name__ == "__main__":
    run_script(main)
