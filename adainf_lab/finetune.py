"""The AdaInf scheduler as published: g(x, M) trained live, jointly with the backbone (frozen / LoRA / full
fine-tuning), on real images — the protocol behind ``experiments/hinge_finetune_resnet18.py``.

    splits → original tables (reference or built) → warm-start g on the calib LUT → train on *fit* images
    (checkpointed, resumable) → select the best checkpoint on *calib* images (real execution) → evaluate on *test*
    images under hard per-request budgets (real execution on the fine-tuned backbone) → records, figures, TensorBoard

Splits. ``calib``: train images held out from backbone training (``--calib-indices``: the reference's
``calib_indices.npy``); ``fit``: the other train images — with the reference checkpoint these are the very images the
backbone was trained on (there are no others), so fine-tuning revisits the backbone's training set; ``test``: the
dataset's test split. fit ∩ calib = ∅ (checked); test never trains, selects or chooses anything.

Protocol (why each piece, see the README text in the report of this module's author and :mod:`agents.learners.hinge_live`):

* BN frozen (backbone in eval mode while it trains): one set of BN statistics serves all 2^B plans at inference; a
  batch mixing plans would otherwise rewrite them with statistics no single plan has;
* distillation from the frozen original full model (KL at temperature T added to the CE): on the backbone's own
  training images the labels are nearly fitted already, the teacher's soft outputs keep every plan close to the full
  model instead of drifting towards the (near-zero-loss) one-hot targets;
* low backbone learning rate with linear warm-up + cosine decay (Adam has no moment estimates at step 0; a large
  first step on a converged network is what destroys accuracy);
* budgets drawn per sample from the evaluation grid, so one network serves every budget;
* g warm-started on the look-up table of the *original* calib table (its block mask at each budget), so the short
  live training refines a sane policy instead of a random one (``policy_init="random"`` for the paper's cold start);
* the full plan trained on a quarter of every batch as well (sandwich rule, ``anchor_fraction``): the cheap plans'
  gradients alone would trade the full model's accuracy away;
* model selection on calib among the warm start and the end of every epoch (mean accuracy over the budgets,
  executed for real), among checkpoints whose calib full-plan accuracy stays within ``max_full_drop`` of the
  original's; a run whose fine-tuning hurts on calib keeps the better checkpoint and says which.

References in the records (``backbone_weights``): ``original`` — ``lut``, ``lut_upper`` (a bound), ``blockdrop`` and
table ``hinge`` fitted on the original calib table, evaluated on the original test table restricted to the same test
images; ``finetuned`` — ``hinge_live_<mode>`` (plans executed on the fine-tuned backbone) and ``lut_refit_<mode>``
(the LUT re-chosen on the fine-tuned backbone's calib table, built with the table builder; evaluated on its test
table when built, else by executing its plans on the test images).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from adainf_env.backbones import load_backbone
from adainf_env.costs import measure_macs, plan_macs_fraction
from adainf_env.data import load_images, make_splits
from adainf_env.errors import CheckpointError, ConfigError, TableMismatchError
from adainf_env.executor import AdaptiveExecutor
from adainf_env.feasibility import lut_choice
from adainf_env.fileio import atomic_torch_save, atomic_write_json, safe_torch_load, save_figure, sha256_file
from adainf_env.tables.outcomes import OutcomeTable, find_split_tables, load_table, save_table
from adainf_env.plans import all_plans
from adainf_env.tables.builder import build_table
from adainf_lab.config import check_seed
from adainf_lab.data import evenly_spaced
from adainf_lab.rundir import check_run_flags, open_run_dir
from adainf_lab.tables import resolve_table_dir
from agents.evaluation.harness import BANDIT_BUDGETS, decision_record, evaluate_bandit
from agents.evaluation.report import scheduler_color, summarize, write_results
from agents.learners.hinge_live import LiveHingeTrainer, merge_lora

__all__ = ["FinetuneConfig", "PRESETS", "resolved_sizes", "run_finetune", "train_live", "combine_runs",
           "plot_finetune", "augment", "FIGURE_LABELS"]

#: Sizes per preset. ``cpu``: sized for ≤ 45 min per mode on 2 CPU cores (training dominates: every block is
#: computed while gates multiply residuals, forward + backward + the teacher's forward ≈ 4 full forwards per image;
#: the calib table costs ≈ 31 full forwards per image, the prefix-sharing enumeration of all 256 plans).
#: ``gpu``: 20k fit images, half the calib split for the re-chosen LUT, the whole test split — sized so that 3 modes
#: × 3 seeds fit in minutes on one GPU; ``--finetuned-test-table True`` adds the fine-tuned backbone's full test table.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"fit_images": 4000, "epochs": 2, "batch_size": 64, "calib_images": 1000, "select_images": 1000,
            "test_images": 2000, "finetuned_test_table": False, "eval_batch": 256},
    "gpu": {"fit_images": 20000, "epochs": 2, "batch_size": 256, "calib_images": 5000, "select_images": 2000,
            "test_images": 10000, "finetuned_test_table": False, "eval_batch": 2048},
}
#: Backbone optimizer and peak learning rate (warm-up + cosine) per mode when not given. Full fine-tuning: SGD with
#: Nesterov momentum (the reference's own optimizer) at a small rate — Adam at 2e-5 cost the reference ResNet18
#: 1.2 pt of full-model test accuracy in 3 steps (sign-like updates of all 11 M weights), SGD at 1e-3 nothing; LoRA:
#: Adam on the adapters (which start at zero), the usual LoRA rate (Hu et al. 2021 use 1e-4 … 2e-3).
BACKBONE_LR = {"none": 1e-4, "lora": 5e-4, "full": 5e-4}
BACKBONE_OPTIMIZER = {"none": "adam", "lora": "adam", "full": "sgd"}
BASELINES = ("lut", "lut_upper", "blockdrop", "hinge")
FIGURE_LABELS = {"lut": "LUT (original backbone)", "lut_upper": "LUT upper curve (bound)",
                 "hinge_live_full": "AdaInf, Full FT", "hinge_live_lora": "AdaInf, LoRA",
                 "hinge_live_none": "AdaInf, frozen backbone", "blockdrop": "BlockDrop (table)",
                 "hinge": "hinge (table)", "lut_refit_full": "LUT re-chosen on Full-FT backbone",
                 "lut_refit_lora": "LUT re-chosen on LoRA backbone", "lut_refit_none": "LUT re-chosen (calib subset)"}


def _opt(text: str, **kw: Any) -> Any:
    return dataclasses.field(metadata={"help": text}, **kw)


@dataclasses.dataclass
class FinetuneConfig:
    """Train the AdaInf scheduler jointly with the backbone (frozen / LoRA / full) and evaluate it under hard budgets."""

    finetune: Literal["none", "lora", "full"] = _opt("what of the backbone trains with g", default="full")
    preset: Literal["cpu", "gpu"] = _opt("subset sizes and epochs (PRESETS); explicit options override",
                                         default="cpu")
    data: Path | None = _opt("CIFAR-10 image-folder archive (cifar10-jpg.tgz) or torchvision root", default=None)
    checkpoint: Path | None = _opt("backbone checkpoint (state dict), e.g. resnet18_sd_cifar10.pt", default=None)
    backbone: str = _opt("backbone architecture (load_backbone name)", default="resnet18_cifar")
    width: int = _opt("backbone width (64 = the reference ResNet18)", default=64)
    calib_indices: Path | None = _opt("train indices held out from backbone training (.npy, e.g. the reference's "
                                      "calib_indices.npy); default: a seeded split of --num-calib", default=None)
    num_calib: int = _opt("calib split size when --calib-indices is not given", default=10_000)
    reference_tables: Path | None = _opt("outcome tables of the ORIGINAL backbone (dir with table_calib.npz / "
                                         "table_test.npz; 'reference' = the shipped reference tables); default: build them",
                                         default=None)
    seed: int = _opt("seed of the fit subset, the training and the table schedulers", default=0)
    fit_images: int | None = _opt("fit images used for training (seeded subset)", default=None)
    epochs: int | None = _opt("training epochs over the fit images", default=None)
    batch_size: int | None = _opt("training batch size", default=None)
    calib_images: int | None = _opt("calib images for the fine-tuned backbone's calib table (evenly spaced)",
                                    default=None)
    select_images: int | None = _opt("calib images for checkpoint selection (evenly spaced in the calib subset)",
                                     default=None)
    test_images: int | None = _opt("test images (evenly spaced)", default=None)
    finetuned_test_table: bool | None = _opt("build the fine-tuned backbone's full test table (all plans): True / "
                                             "False / None = the preset's choice", default=None)
    eval_batch: int | None = _opt("images per inference batch", default=None)
    budgets: tuple[float, ...] = _opt("hard per-request test budgets (fractions of the full model's MACs)",
                                      default=BANDIT_BUDGETS)
    train_budgets: tuple[float, ...] | None = _opt("training budgets, one drawn per sample (default: --budgets)",
                                                   default=None)
    lam: float = _opt("λ of the hinge term λ·max(0, cost − M)", default=10.0)
    tau: float = _opt("Gumbel-sigmoid temperature", default=1.0)
    lr: float = _opt("policy learning rate (Adam, peak)", default=1e-3)
    backbone_lr: float | None = _opt("backbone learning rate (Adam, peak); default per mode: none 1e-4 (unused), "
                                     "lora 5e-4 (Adam), full 5e-4 (SGD)", default=None)
    backbone_optimizer: Literal["auto", "adam", "sgd"] = _opt("backbone optimizer (auto: Adam for LoRA, "
                                                              "SGD-Nesterov for full)", default="auto")
    warmup_fraction: float = _opt("fraction of the steps spent in linear lr warm-up", default=0.05)
    kd_weight: float = _opt("α: weight of the distillation term (1 − α on the CE)", default=0.5)
    kd_temperature: float = _opt("distillation temperature T", default=4.0)
    freeze_bn: bool = _opt("keep the backbone in eval mode while training (BN statistics fixed)", default=True)
    anchor_fraction: float = _opt("rows of each batch that also train the full plan (sandwich rule; lora/full)",
                                  default=0.25)
    max_full_drop: float = _opt("selection: a checkpoint is eligible only if its calib full-plan accuracy is at most "
                                "this far (fraction) below the original's", default=0.005)
    augment: bool = _opt("random crop (pad 4) + horizontal flip of the fit images", default=True)
    lora_rank: int = _opt("LoRA rank", default=4)
    hidden: tuple[int, ...] = _opt("policy MLP hidden sizes", default=(64,))
    policy_init: Literal["lut", "random"] = _opt("warm-start g on the original calib LUT, or start at random",
                                                 default="lut")
    baselines: tuple[str, ...] = _opt("table schedulers on the original backbone", default=BASELINES)
    checkpoint_every: int = _opt("save the resumable training state every N steps", default=50)
    device: str = _opt("torch device (auto = cuda if available)", default="auto")
    out: Path | None = _opt("run directory; an existing one needs --resume (training continues from its checkpoint; "
                            "same arguments) or --overwrite (moved aside whole)", default=None)
    resume: bool = _opt("continue the run in --out (same arguments, else refused)", default=False)
    overwrite: bool = _opt("replace the run in --out: the old directory is moved aside to <out>.replaced-<time>",
                           default=False)
    runs_root: Path = _opt("parent of new run directories", default=Path("runs"))
    combine: tuple[Path, ...] = _opt("instead of training: combine these run directories into --out (one figure, "
                                     "mean ± std over seeds)", default=())
    plots: bool = _opt("write PNGs", default=True)
    progress: bool = _opt("progress bars", default=False)

    def __post_init__(self) -> None:
        if self.combine:
            return
        if self.data is None or self.checkpoint is None:
            raise ConfigError("--data (CIFAR-10 archive) and --checkpoint (backbone state dict) are required")
        check_seed(self.seed)
        if not 0 <= self.lam < float("inf"):
            raise ConfigError(f"--lam must be a finite number ≥ 0, got {self.lam}")
        check_run_flags(self.out, resume=self.resume, overwrite=self.overwrite)
        for k in ("fit_images", "epochs", "batch_size", "calib_images", "select_images", "test_images",
                  "eval_batch"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ConfigError(f"--{k.replace('_', '-')} must be ≥ 1, got {v}")
        for name, bs in (("budgets", self.budgets), ("train-budgets", self.train_budgets or self.budgets)):
            if not bs or any(not 0 < b <= 1 for b in bs):
                raise ConfigError(f"--{name} must be non-empty fractions in (0, 1], got {bs}")
        if not 0 <= self.anchor_fraction <= 1 or not 0 <= self.max_full_drop <= 1:
            raise ConfigError("--anchor-fraction and --max-full-drop must be in [0, 1]")
        if not 0 <= self.warmup_fraction < 1 or self.checkpoint_every < 1 or self.lora_rank < 1:
            raise ConfigError("--warmup-fraction must be in [0, 1), --checkpoint-every and --lora-rank ≥ 1")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ConfigError(f"--baselines: unknown {unknown}; choose from {list(BASELINES)}")
        if self.reference_tables is not None:  # "reference" = the tables shipped in the package; checked before work
            self.reference_tables = resolve_table_dir(self.reference_tables)


def resolved_sizes(cfg: FinetuneConfig) -> dict[str, Any]:
    """The preset's sizes with explicit options applied."""
    out = dict(PRESETS[cfg.preset])
    for k in out:
        v = getattr(cfg, k)
        if v is not None:
            out[k] = v
    out["select_images"] = min(out["select_images"], out["calib_images"])
    return out


def say(msg: str) -> None:
    print(msg, flush=True)


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


class _Stages:
    """Wall / process-CPU seconds of each stage (run_summary.json), so a CPU budget can be checked per stage."""

    def __init__(self) -> None:
        self.t, self.c, self.times = time.perf_counter(), time.process_time(), {}

    def lap(self, name: str) -> str:
        t, c = time.perf_counter(), time.process_time()
        self.times[name] = {"wall_s": round(t - self.t, 2), "cpu_s": round(c - self.c, 2)}
        self.t, self.c = t, c
        return f"{self.times[name]['wall_s']:.1f} s wall"


# --------------------------------------------------------------------------------------------------- data
def augment(images: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` + random horizontal flip (the backbone's training augmentation), on
    uint8 [N, C, H, W]; randomness from ``gen`` only (resumable)."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(images)
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


# --------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def _execute(executor: AdaptiveExecutor, images: np.ndarray, plans: np.ndarray, batch: int) -> np.ndarray:
    """Predicted class of each image under its plan, executed on the executor's backbone."""
    preds = [executor.execute(images[s:s + batch], plans[s:s + batch]).argmax(1).cpu().numpy()
             for s in range(0, len(images), batch)]
    return np.concatenate(preds)


def _evaluate_live(trainer: LiveHingeTrainer, executor: AdaptiveExecutor, images: np.ndarray, labels: np.ndarray,
                   budgets: Sequence[float], batch: int) -> list[dict[str, Any]]:
    """Per budget: the executor runs the stem, g picks each image's plan from the stem features, the executor runs
    that plan on its backbone (the trainer's current one, or the merged fine-tuned one)."""
    def choose(feats: torch.Tensor, b: np.ndarray) -> torch.Tensor:
        return trainer.plans_from_features(feats, torch.as_tensor(b, dtype=torch.float64))

    rows = []
    for b in budgets:
        res = [executor.run(images[s:s + batch], choose, float(b)) for s in range(0, len(images), batch)]
        rows.append({"budget": float(b), "plans": np.concatenate([r.plan for r in res]),
                     "correct": np.concatenate([r.pred for r in res]) == labels,
                     "cost": np.concatenate([r.cost for r in res])})
    return rows


# --------------------------------------------------------------------------------------------------- training
def _fingerprint(cfg: FinetuneConfig, sizes: dict[str, Any], fit_idx: np.ndarray) -> str:
    """What a resumable checkpoint must agree on (other run settings may change between a kill and a resume)."""
    keys = ("finetune", "seed", "lam", "tau", "lr", "backbone_lr", "warmup_fraction", "kd_weight", "kd_temperature",
            "freeze_bn", "anchor_fraction", "backbone_optimizer", "max_full_drop", "augment", "lora_rank", "hidden", "policy_init", "budgets", "train_budgets", "backbone", "width")
    doc = {k: getattr(cfg, k) for k in keys}
    doc.update(epochs=sizes["epochs"], batch_size=sizes["batch_size"], fit=np.asarray(fit_idx).tolist(),
               checkpoint=sha256_file(cfg.checkpoint) if cfg.checkpoint else None)
    return json.dumps(doc, sort_keys=True, default=str)


def train_live(trainer: LiveHingeTrainer, images: np.ndarray, labels: np.ndarray, *, epochs: int, batch_size: int,
               train_budgets: Sequence[float], seed: int, do_augment: bool, state_path: Path, fingerprint: str,
               select: Callable[[], tuple[float, float]], max_full_drop: float = 1.0, checkpoint_every: int = 50,
               writer: Any = None,
               log: Callable[[str], None] = say, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train for ``epochs`` over ``images`` and keep the checkpoint that ``select()`` rates best among the start and
    the end of every epoch; the best weights are loaded at the end. ``select()`` returns ``(score, full-plan
    accuracy)`` on calib images; a checkpoint is eligible only if its full-plan accuracy is at most
    ``max_full_drop`` below the start's (the start is always eligible).

    The loop state (epoch, position, this epoch's permutation, the data generator, the best checkpoint, the
    trainer's state) is written to ``state_path`` every ``checkpoint_every`` steps and at every epoch end; a call
    with an existing ``state_path`` of the same ``fingerprint`` resumes exactly where it stopped.
    Returns ``{"history", "selection", "selected_step", "steps"}``.
    """
    n = len(images)
    steps_per_epoch = max(1, n // batch_size)  # the last partial batch is dropped: equal batch sizes
    grid = torch.as_tensor(list(train_budgets), dtype=torch.float32)
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    st: dict[str, Any] = {"epoch": 0, "pos": 0, "perm": None, "history": [], "selection": [], "best": None}
    if state_path.is_file():
        saved = safe_torch_load(state_path)
        if saved.get("fingerprint") != fingerprint:
            raise CheckpointError(f"{state_path}: a training checkpoint of a different configuration; use a new "
                                  f"--out or delete it")
        trainer.load_state_dict(saved["trainer"])
        gen.set_state(saved["data_generator"])
        st = saved["loop"]
        log(f"[train] resumed from {state_path} at epoch {st['epoch']} step {st['pos']}/{steps_per_epoch}")

    def snapshot() -> dict[str, Any]:
        return {"policy": {k: v.detach().cpu().clone() for k, v in trainer.policy.state_dict().items()},
                "backbone": {k: v.detach().cpu().clone() for k, v in trainer.backbone.state_dict().items()}}

    def save() -> None:
        atomic_torch_save({"fingerprint": fingerprint, "trainer": trainer.state_dict(),
                           "data_generator": gen.get_state(), "loop": st}, state_path)

    def evaluate(step: int) -> None:
        score, full = (float(v) for v in select())
        first = st["selection"][0]["calib_full_accuracy"] if st["selection"] else full
        eligible = full >= first - max_full_drop - 1e-12
        st["selection"].append({"step": step, "calib_score": score, "calib_full_accuracy": full,
                                "eligible": eligible})
        if writer is not None:
            writer.add_scalar("select/calib_mean_accuracy", score, step)
            writer.add_scalar("select/calib_full_plan_accuracy", full, step)
        if eligible and (st["best"] is None or score > st["best"]["score"]):
            st["best"] = {"score": score, "step": step, **snapshot()}
        log(f"[select] step {step}: calib mean accuracy over budgets {100 * score:.2f} %, full plan "
            f"{100 * full:.2f} %{'' if eligible else ' (not eligible: full plan dropped)'} "
            f"(best so far: step {st['best']['step']})")

    if not st["selection"]:
        evaluate(0)
        save()
    while st["epoch"] < epochs:
        if st["perm"] is None:
            st["perm"] = torch.randperm(n, generator=gen)
        perm = st["perm"]
        while st["pos"] < steps_per_epoch:
            idx = perm[st["pos"] * batch_size:(st["pos"] + 1) * batch_size].numpy()
            x = torch.from_numpy(images[idx])
            if do_augment:
                x = augment(x, gen)
            y = torch.from_numpy(np.asarray(labels[idx], dtype=np.int64))
            b = grid[torch.randint(0, len(grid), (len(idx),), generator=gen)]
            m = trainer.step(x, y, b)
            st["pos"] += 1
            step = trainer.steps_done
            m["lr_policy"], *rest = trainer.lrs()
            if rest:
                m["lr_backbone"] = rest[0]
            st["history"].append({"step": step, **m})
            if writer is not None:
                for k, v in m.items():
                    writer.add_scalar(f"train/{k}", v, step)
            if step % max(1, steps_per_epoch // 5) == 0:
                log(f"[train] epoch {st['epoch'] + 1} step {st['pos']}/{steps_per_epoch}: loss {m['loss']:.3f} "
                    f"ce {m['ce']:.3f} kd {m['kd']:.3f} cost {m['cost']:.3f} overrun {m['overrun_rate']:.2f}")
            if st["pos"] < steps_per_epoch and step % checkpoint_every == 0:
                save()
            if on_step is not None:
                on_step(step)
        st["epoch"] += 1
        st["pos"], st["perm"] = 0, None
        evaluate(trainer.steps_done)
        save()
    best = st["best"]
    trainer.policy.load_state_dict(best["policy"])
    trainer.backbone.load_state_dict(best["backbone"])
    return {"history": st["history"], "selection": st["selection"], "selected_step": best["step"],
            "steps": trainer.steps_done}


# --------------------------------------------------------------------------------------------------- the run
def _original_tables(cfg: FinetuneConfig, backbone: Any, train: tuple, test: tuple, calib_idx: np.ndarray,
                     calib_split: np.ndarray, test_idx: np.ndarray, device: torch.device, sizes: dict[str, Any],
                     log: Callable[[str], None]) -> tuple[OutcomeTable, OutcomeTable, str]:
    """(calib table, test table restricted to ``test_idx``, source) of the ORIGINAL backbone: the given reference
    tables (whole calib table: the table schedulers fit on all of it), or built on the calib / test subsets."""
    if cfg.reference_tables is not None:
        paths = find_split_tables(cfg.reference_tables)
        calib, test_t = load_table(paths["calib"]), load_table(paths["test"])
        pos = np.minimum(np.searchsorted(test_t.sample_index, test_idx), test_t.num_samples - 1)
        if not np.array_equal(test_t.sample_index[pos], test_idx):
            raise TableMismatchError(f"{cfg.reference_tables}: the test table lacks some of the evaluated test images")
        test_t = test_t.subset(pos)
        if not np.array_equal(test_t.label, test[1][test_idx]):
            raise TableMismatchError(f"{cfg.reference_tables}: test labels differ from {cfg.data}'s test split")
        if not np.isin(calib.sample_index, calib_split).all():
            raise TableMismatchError(f"{cfg.reference_tables}: calib table rows are not in the calib split (pass the "
                                     f"reference's --calib-indices)")
        return calib, test_t, str(cfg.reference_tables)
    common = dict(device=device, batch_size=sizes["eval_batch"], progress=cfg.progress,
                  meta={"dataset": "cifar10", "checkpoint_sha256": sha256_file(cfg.checkpoint)})
    log(f"[tables] building the original backbone's tables ({len(calib_idx)} calib, {len(test_idx)} test images)")
    calib = build_table(backbone, train[0][calib_idx], train[1][calib_idx], sample_index=calib_idx,
                        **{**common, "meta": {**common["meta"], "split": "calib"}})
    test_t = build_table(backbone, test[0][test_idx], test[1][test_idx], sample_index=test_idx,
                         **{**common, "meta": {**common["meta"], "split": "test"}})
    return calib, test_t, "built"


def run_finetune(cfg: FinetuneConfig, *, log: Callable[[str], None] = say,
                 on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """One run end to end (module docstring); returns the summary (also ``run_summary.json``)."""
    from torch.utils.tensorboard import SummaryWriter

    from agents.registry import make_scheduler

    sizes = resolved_sizes(cfg)
    device = _device(cfg.device)
    mode = cfg.finetune
    name = f"hinge_live_{mode}"
    stages = _Stages()
    torch.manual_seed(cfg.seed)
    train = load_images(cfg.data, "cifar10", "train")
    test = load_images(cfg.data, "cifar10", "test")
    splits = (make_splits(len(train[1]), reference_calib_indices=cfg.calib_indices) if cfg.calib_indices
              else make_splits(len(train[1]), seed=0, num_calib=cfg.num_calib))
    rng = np.random.default_rng([cfg.seed, 0xF17])
    fit_idx = np.sort(rng.choice(splits["fit"], size=min(sizes["fit_images"], len(splits["fit"])), replace=False))
    calib_idx = evenly_spaced(splits["calib"], sizes["calib_images"])
    select_pos = evenly_spaced(np.arange(len(calib_idx)), sizes["select_images"])
    test_idx = evenly_spaced(np.arange(len(test[1])), sizes["test_images"])
    if np.intersect1d(fit_idx, splits["calib"]).size:
        raise ConfigError("internal: fit and calib splits overlap")
    note = ("fit images are train images NOT in --calib-indices: with the reference checkpoint these are the images "
            "the backbone itself was trained on" if cfg.calib_indices else
            "fit/calib: a seeded split of the train images (seed 0)")
    run_dir = open_run_dir(cfg, backbone=cfg.backbone, algo=name, seed=cfg.seed, out=cfg.out, root=cfg.runs_root,
                           resume=cfg.resume, overwrite=cfg.overwrite, log=log,
                           extra={"resolved_sizes": sizes, "device": str(device), "split_note": note,
                                  "num_fit_pool": int(len(splits["fit"]))}).path
    log(f"[data] {cfg.data}: fit {len(fit_idx)} / calib {len(calib_idx)} (select {len(select_pos)}) / test "
        f"{len(test_idx)} images; {note} ({stages.lap('data')}); run directory {run_dir}")
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    try:
        summary = _run(cfg, sizes, device, run_dir, train, test, fit_idx, calib_idx, splits["calib"], select_pos,
                       test_idx, writer, stages, log, on_step, make_scheduler)
    finally:
        writer.close()
    return summary


def _run(cfg, sizes, device, run_dir, train, test, fit_idx, calib_idx, calib_split, select_pos, test_idx, writer,
         stages, log, on_step, make_scheduler) -> dict[str, Any]:
    mode, name, batch = cfg.finetune, f"hinge_live_{cfg.finetune}", sizes["eval_batch"]
    backbone = load_backbone(cfg.backbone, cfg.checkpoint, device=device, width=cfg.width).eval()
    masks = all_plans(backbone.num_blocks)
    macs = measure_macs(backbone)
    plan_cost = plan_macs_fraction(macs, masks)
    orig_calib, orig_test, tables_src = _original_tables(cfg, backbone, train, test, calib_idx, calib_split,
                                                         test_idx, device, sizes, log)
    if not np.allclose(orig_calib.plan_cost("macs"), plan_cost, rtol=1e-6, atol=1e-9):
        raise TableMismatchError("the original tables' plan costs differ from the backbone's measured MACs")
    log(f"[tables] original backbone: calib {orig_calib.num_samples} rows, test {orig_test.num_samples} rows "
        f"({tables_src}; {stages.lap('original_tables')})")
    test_x, test_y = test[0][test_idx], test[1][test_idx]
    cal_x, cal_y = train[0][calib_idx], train[1][calib_idx]
    sel_x, sel_y = cal_x[select_pos], cal_y[select_pos]
    fit_x, fit_y = train[0][fit_idx], train[1][fit_idx]

    # original full-model accuracy on the test images, executed (the acceptance reference)
    full_code = np.full(len(test_x), (1 << backbone.num_blocks) - 1, dtype=np.int64)
    orig_exec = AdaptiveExecutor(backbone, masks, plan_cost)
    orig_full_acc = float((_execute(orig_exec, test_x, full_code, batch) == test_y).mean())

    # ---------------------------------------------------------------- trainer
    steps_per_epoch = max(1, len(fit_x) // sizes["batch_size"])
    total = steps_per_epoch * sizes["epochs"]
    train_budgets = cfg.train_budgets or cfg.budgets
    bb_opt = BACKBONE_OPTIMIZER[mode] if cfg.backbone_optimizer == "auto" else cfg.backbone_optimizer
    trainer = LiveHingeTrainer(backbone, block_cost=macs.blocks[:, 0] / macs.full, base_cost=macs.base / macs.full,
                               lam=cfg.lam, tau=cfg.tau, finetune=mode, lora_rank=cfg.lora_rank, lr=cfg.lr,
                               backbone_lr=cfg.backbone_lr or BACKBONE_LR[mode], hidden=tuple(cfg.hidden),
                               kd_weight=cfg.kd_weight, kd_temperature=cfg.kd_temperature, freeze_bn=cfg.freeze_bn,
                               anchor_fraction=cfg.anchor_fraction, backbone_optimizer=bb_opt,
                               total_steps=total, warmup_steps=int(math.ceil(cfg.warmup_fraction * total)),
                               device=device, seed=cfg.seed)
    scaler_x = fit_x[evenly_spaced(np.arange(len(fit_x)), 2000)]
    trainer.fit_scaler(torch.from_numpy(scaler_x))
    if cfg.policy_init == "lut":
        grid = np.asarray(train_budgets, dtype=np.float64)
        lut_codes = lut_choice(plan_cost, orig_calib.accuracy_by_plan(), grid)
        with torch.no_grad():
            feats = torch.cat([trainer._stem_features(torch.from_numpy(scaler_x[s:s + batch]))[1].cpu()
                               for s in range(0, len(scaler_x), batch)])
        k = len(grid)
        ws_loss = trainer.warm_start(feats.repeat(k, 1), torch.as_tensor(grid, dtype=torch.float32)
                                     .repeat_interleave(len(feats)),
                                     torch.as_tensor(masks[lut_codes]).repeat_interleave(len(feats), dim=0))
        log(f"[train] g warm-started on the original calib LUT plans {dict(zip(map(float, grid), lut_codes.tolist()))}"
            f" (BCE {ws_loss:.3f})")
    live_exec = AdaptiveExecutor(trainer.backbone, masks, plan_cost, feature_format="torch")

    sel_full = np.full(len(sel_x), (1 << backbone.num_blocks) - 1, dtype=np.int64)

    def select() -> tuple[float, float]:
        rows = _evaluate_live(trainer, live_exec, sel_x, sel_y, cfg.budgets, batch)
        full = float((_execute(live_exec, sel_x, sel_full, batch) == sel_y).mean())
        return float(np.mean([r["correct"].mean() for r in rows])), full

    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    log(f"[train] {mode}: {sizes['epochs']} epoch(s) × {steps_per_epoch} steps of {sizes['batch_size']} images on "
        f"{device}; backbone {bb_opt} lr {cfg.backbone_lr or BACKBONE_LR[mode]:g}, kd α={cfg.kd_weight} T={cfg.kd_temperature},"
        f" BN {'frozen' if cfg.freeze_bn else 'updating'}")
    t_train = time.perf_counter()
    result = train_live(trainer, fit_x, fit_y, epochs=sizes["epochs"], batch_size=sizes["batch_size"],
                        train_budgets=train_budgets, seed=cfg.seed, do_augment=cfg.augment,
                        state_path=ckpt_dir / "last.pt", fingerprint=_fingerprint(cfg, sizes, fit_idx),
                        select=select, max_full_drop=cfg.max_full_drop, checkpoint_every=cfg.checkpoint_every, writer=writer, log=log,
                        on_step=on_step)
    train_s = time.perf_counter() - t_train
    log(f"[train] done: {result['steps']} steps, selected step {result['selected_step']} on calib "
        f"({stages.lap('train_and_select')})")
    merged = merge_lora(trainer.backbone)
    ft = trainer.backbone.eval()
    atomic_torch_save({k: v.detach().cpu() for k, v in ft.state_dict().items()}, run_dir / "backbone_finetuned.pt")
    atomic_torch_save(trainer.policy.state_dict(), run_dir / "policy.pt")
    ft_exec = AdaptiveExecutor(ft, masks, plan_cost, feature_format="torch")

    # ---------------------------------------------------------------- test: the live scheduler, executed
    extra_ft = {"backbone_weights": "finetuned", "finetune": mode, "evaluation": "executed"}
    records = []
    for r in _evaluate_live(trainer, ft_exec, test_x, test_y, cfg.budgets, batch):
        records.append({**decision_record(name, is_bound=False, setting="bandit", variant="fixed",
                                          budget=r["budget"], seed=cfg.seed, correct=r["correct"], costs=r["cost"],
                                          given=float(r["budget"]), plans=r["plans"], num_plans=len(masks)),
                        **extra_ft})
    ft_full_acc = float((_execute(ft_exec, test_x, full_code, batch) == test_y).mean())
    log(f"[test] {name} evaluated; full plan: original {100 * orig_full_acc:.2f} % → fine-tuned "
        f"{100 * ft_full_acc:.2f} % ({stages.lap('test_live')})")

    # ---------------------------------------------------------------- LUT re-chosen on the fine-tuned calib table
    meta = {"dataset": "cifar10", "finetune": mode, "checkpoint_sha256": sha256_file(run_dir / "backbone_finetuned.pt")}
    ft_calib = build_table(ft, cal_x, cal_y, sample_index=calib_idx, device=device, batch_size=batch,
                           progress=cfg.progress, meta={**meta, "split": "calib"})
    save_table(ft_calib, run_dir / "table_calib.npz")
    lut_ft = make_scheduler("lut").fit(ft_calib, seed=cfg.seed)
    refit_name = f"lut_refit_{mode}"
    if sizes["finetuned_test_table"]:
        ft_test = build_table(ft, test_x, test_y, sample_index=test_idx, device=device, batch_size=batch,
                              progress=cfg.progress, meta={**meta, "split": "test"})
        save_table(ft_test, run_dir / "table_test.npz")
        for rec in evaluate_bandit(lut_ft, ft_test, cfg.budgets, seed=cfg.seed):
            records.append({**rec, "scheduler": refit_name, **extra_ft, "evaluation": "table"})
    else:
        for b in cfg.budgets:
            code = int(lut_choice(plan_cost, ft_calib.accuracy_by_plan(), [b])[0])
            plans = np.full(len(test_x), code, dtype=np.int64)
            pred = _execute(ft_exec, test_x, plans, batch)
            records.append({**decision_record(refit_name, is_bound=False, setting="bandit", variant="fixed",
                                              budget=b, seed=cfg.seed, correct=pred == test_y, costs=plan_cost[plans],
                                              given=float(b), plans=plans, num_plans=len(masks)),
                            **extra_ft})
    log(f"[test] {refit_name} evaluated ({stages.lap('refit_lut')})")

    # ---------------------------------------------------------------- references on the original backbone
    extra_orig = {"backbone_weights": "original", "finetune": None, "evaluation": "table"}
    for ref in cfg.baselines:
        kw = {"progress": False} if ref in ("blockdrop", "hinge") else {}
        sched = make_scheduler(ref, **kw).fit(orig_calib, seed=cfg.seed)
        records += [{**rec, **extra_orig} for rec in evaluate_bandit(sched, orig_test, cfg.budgets, seed=cfg.seed)]
    log(f"[test] references on the original backbone: {', '.join(cfg.baselines)} ({stages.lap('references')})")

    files = write_results(records, run_dir, plots=False)
    figure = None
    if cfg.plots:
        figure = plot_finetune(records, run_dir / "accuracy_vs_budget.png",
                               title=f"{cfg.backbone} CIFAR-10 test ({len(test_x)} images), seed {cfg.seed}")
    for rec in records:
        writer.add_scalar(f"test/{rec['scheduler']}/accuracy", rec["accuracy"], int(round(100 * rec["budget"])))
        writer.add_scalar(f"test/{rec['scheduler']}/mean_cost", rec["mean_cost"], int(round(100 * rec["budget"])))
    acc = {(r["scheduler"], r["budget"]): r["accuracy"] for r in records}
    gaps = {ref: {f"{b:g}": round(100 * (acc[(name, b)] - acc[(ref, b)]), 2) for b in cfg.budgets}
            for ref in ("lut", refit_name) if (ref, cfg.budgets[0]) in acc}
    summary = {"run_dir": str(run_dir), "finetune": mode, "seed": cfg.seed, "device": str(device),
               "sizes": sizes, "steps": result["steps"], "selected_step": result["selected_step"],
               "selection": result["selection"], "train_s": round(train_s, 2),
               "train_images_per_s": round(result["steps"] * sizes["batch_size"] / max(train_s, 1e-9), 2),
               "full_plan_test_accuracy": {"original": orig_full_acc, "finetuned": ft_full_acc},
               "full_plan_drop_pt": round(100 * (orig_full_acc - ft_full_acc), 3),
               "full_plan_within_0.5pt": bool(orig_full_acc - ft_full_acc <= 0.005 + 1e-12),
               "lora_layers_merged": merged, "original_tables": tables_src,
               "gap_to_pt": gaps, "stages": stages.times, "figure": str(figure) if figure else None,
               "summary_md": files["markdown"]}
    atomic_write_json(run_dir / "run_summary.json", summary)
    log(f"\n[results] test accuracy (%), hard per-request budgets:\n{files['markdown']}")
    log(f"[run] {name} − lut (pt): {gaps.get('lut')}; − {refit_name}: {gaps.get(refit_name)}")
    log(f"[run] done → {run_dir}/results.json")
    return summary


# --------------------------------------------------------------------------------------------------- combine
def _dedupe(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeats of the same original-backbone reference (scheduler, budget, seed) that several runs of one seed
    (none / lora / full) each evaluated: a seed counts once."""
    seen, out = set(), []
    for r in records:
        key = (r["scheduler"], r.get("backbone_weights"), r.get("finetune"), float(r["budget"]), r["seed"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def combine_runs(run_dirs: Sequence[Path], out: Path, *, plots: bool = True, log: Callable[[str], None] = say
                 ) -> dict[str, Any]:
    """Merge the results of several runs (modes × seeds) into ``out``: results/summary files, one figure."""
    records: list[dict[str, Any]] = []
    runs = []
    for d in run_dirs:
        p = Path(d) / "results.json"
        if not p.is_file():
            raise ConfigError(f"--combine: {d} has no results.json")
        records += json.loads(p.read_text())
        s = Path(d) / "run_summary.json"
        if s.is_file():
            doc = json.loads(s.read_text())
            runs.append({k: doc.get(k) for k in ("run_dir", "finetune", "seed", "selected_step", "full_plan_drop_pt",
                                                 "full_plan_within_0.5pt", "train_s", "stages")})
    records = _dedupe(records)
    out.mkdir(parents=True, exist_ok=True)
    files = write_results(records, out, plots=False)
    figure = plot_finetune(records, out / "accuracy_vs_budget.png",
                           title=f"CIFAR-10 test, mean ± std over seeds ({len(run_dirs)} runs)") if plots else None
    doc = {"runs": runs, "figure": str(figure) if figure else None, "summary_md": files["markdown"]}
    atomic_write_json(out / "combined_summary.json", doc)
    log(files["markdown"])
    log(f"[combine] {len(run_dirs)} runs → {out}")
    return doc


def plot_finetune(records: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Poster-style accuracy-vs-budget figure: mean ± std over seeds, one line per scheduler; bounds dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(records)
    names = list(dict.fromkeys(s["scheduler"] for s in summary))
    order = [n for n in FIGURE_LABELS if n in names] + [n for n in names if n not in FIGURE_LABELS]
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    for n in order:
        rows = sorted((s for s in summary if s["scheduler"] == n), key=lambda s: s["budget"])
        b = np.array([s["budget"] for s in rows])
        m = 100 * np.array([s["accuracy_mean"] for s in rows])
        sd = 100 * np.array([s["accuracy_std"] for s in rows])
        bound = rows[0]["is_bound"]
        live = n.startswith("hinge_live")
        ax.plot(b, m, ls="--" if bound else (":" if n.startswith("lut_refit") else "-"), marker="o" if live else ".",
                lw=2.6 if live else 1.6, color="0.45" if bound else scheduler_color(n),
                label=FIGURE_LABELS.get(n, n) + (f" (n={rows[0]['n_seeds']})" if rows[0]["n_seeds"] > 1 else ""))
        if (sd > 0).any():
            ax.fill_between(b, m - sd, m + sd, alpha=0.15, color="0.45" if bound else scheduler_color(n))
    ax.set_xlabel("budget (fraction of the full model's MACs), hard per request", fontsize=12)
    ax.set_ylabel("test accuracy (%)", fontsize=12)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path, dpi=130)
