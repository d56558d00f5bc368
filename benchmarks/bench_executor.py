"""Wall-clock throughput of the batched adaptive executor vs the full model, and the error of the latency model.

One run, on one device:

* **Plan mix.** Every request gets its own plan, drawn i.i.d. from the whole reference plan space (all 2^B block
  masks) with probability ∝ exp(θ · MACs fraction); θ is solved so that the expected MACs fraction is
  ``--target-macs`` (0.5: "a plan mix averaging 50 % of the MACs"; θ is small there because the uniform mix over the
  256 ResNet18 plans already averages 0.507). Each timing round's set of plans is redrawn until its mean MACs fraction
  is within ±0.01 of the target, so every round really runs a 50 % mix. Such a mix is the hard case for batching: in a batch of 256 almost every
  row has a different plan, so grouping by plan cannot help and the executor must gather/scatter rows per block.
* **Throughput** (images/s) of ``AdaptiveExecutor.run`` (stem → features → scheduler → per-block gathered execution
  → head) against the plain full model ``backbone(x)``, at batch 1 (``--b1-requests`` single-image requests) and
  batch ``--big-batch`` (256). Full model and engine are timed alternately, ``--rounds`` times; the speedup is the
  median over rounds of the paired ratio (robust to load drifting during the run).
* **Latency model.** A :func:`adainf_env.latency.profile_latency` profile at batch 1 and 256, and
  :func:`adainf_env.latency.validate_latency_model` on ``--validate-plans`` plans from the mix (plus the empty and
  full plans): mean / max relative error of the additive per-block model against end-to-end plan forwards.

Usage (CPU, the project's numbers): ``OMP_NUM_THREADS=2 python benchmarks/bench_executor.py`` (``--mix depth``: few plans).
GPU: ``python benchmarks/bench_executor.py --device cuda [--compile] [--cuda-graphs] [--channels-last]``
(timings are bracketed by ``torch.cuda.synchronize()``, with warm-up calls first).
The last output line is JSON with ``speedup_b1``, ``speedup_b256`` (``speedup_b<big-batch>``) and ``device``.
"""

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Literal

from adainf_lab.cli import parse_config, run_script  # first: adainf_lab sets the OpenMP wait policy before torch

import numpy as np
import torch

from adainf_env.backbones import load_backbone
from adainf_env.errors import ConfigError
from adainf_env.executor import AdaptiveExecutor
from adainf_env.fileio import atomic_write_json
from adainf_env.latency import device_name, plan_latency_ms, profile_latency, save_profile, validate_latency_model
from adainf_env.plans import all_plans

__all__ = ["Config", "main", "tilted_plan_probs"]

_REFERENCE_CKPT = Path(__file__).resolve().parents[2] / "shared" / "reference" / "resnet18_sd_cifar10.pt"


@dataclasses.dataclass
class Config:
    """Throughput of the batched adaptive executor vs the full model, and the error of the latency model."""

    backbone: str = "resnet18_cifar"
    checkpoint: str = str(_REFERENCE_CKPT)  # "" → random init (throughput does not depend on the weights)
    device: str = "cpu"
    threads: int = 2  # torch CPU threads
    target_macs: float = 0.5  # mean MACs fraction of the plan mix
    mix: Literal["all", "depth"] = "all"  # plans drawn: all 2^B (one plan per row) | B+1 "run the first k blocks"
    big_batch: int = 256
    b1_requests: int = 48  # single-image requests per round at batch 1
    rounds: int = 3  # alternating full / engine timing rounds
    strategy: Literal["auto", "gather", "group"] = "auto"  # executor strategy
    channels_last: bool = False
    compile: bool = False  # torch.compile the engine's parts and the full model (dynamic shapes)
    cuda_graphs: bool = False  # torch.compile(mode="reduce-overhead") = CUDA graphs; implies --compile, bucket 32
    bucket: int = 0  # pad gathered subsets to a multiple of this many rows (few shapes for compile / graphs)
    latency_repeats: int = 3  # timing repeats per part in the latency profile / validation
    latency_clock: Literal["wall", "process"] = "wall"  # process = CPU time: robust to other jobs on a shared CPU
    validate_plans: int = 6  # plans from the mix timed end to end (plus the empty and full plans)
    skip_latency: bool = False
    seed: int = 0
    out: str = ""  # optional directory: results.json + latency_profile.json

    def __post_init__(self) -> None:
        if self.latency_clock == "process" and not self.device.startswith("cpu"):
            raise ConfigError("--latency-clock process measures CPU time; use wall on a GPU")
        if not 0.0 < self.target_macs <= 1.0:
            raise ConfigError(f"--target-macs must be in (0, 1], got {self.target_macs}")
        if min(self.big_batch, self.b1_requests, self.rounds, self.latency_repeats, self.threads) < 1:
            raise ConfigError("--big-batch, --b1-requests, --rounds, --latency-repeats and --threads must be ≥ 1")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {self.device} requested but CUDA is not available on this machine")
        if self.cuda_graphs:
            self.compile = True
            self.bucket = self.bucket or 32


def tilted_plan_probs(cost: np.ndarray, target: float) -> tuple[np.ndarray, float]:
    """Probabilities ∝ exp(θ·cost) over plans with expected cost ``target`` (θ by bisection)."""
    if not cost.min() < target < cost.max():
        raise ConfigError(f"target MACs fraction {target} outside the plan space's range "
                          f"({cost.min():.3f}, {cost.max():.3f})")

    def probs(theta: float) -> np.ndarray:
        z = theta * (cost - cost.mean())
        w = np.exp(z - z.max())
        return w / w.sum()

    lo, hi = -200.0, 200.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if probs(mid) @ cost < target:
            lo = mid
        else:
            hi = mid
    theta = 0.5 * (lo + hi)
    return probs(theta), theta


def _draw_mix(rng: np.random.Generator, probs: np.ndarray, cost: np.ndarray, n_req: int, bs: int,
              target: float, tol: float = 0.01) -> list[np.ndarray]:
    """``n_req`` plan arrays of ``bs`` rows drawn i.i.d. from ``probs``, redrawn until their mean cost is within
    ``tol`` of ``target`` (a round that runs a 0.45 mix would not measure "a 50 % mix")."""
    for _ in range(10_000):
        plans = [rng.choice(len(probs), size=bs, p=probs) for _ in range(n_req)]
        if abs(float(np.mean([cost[p].mean() for p in plans])) - target) <= tol:
            return plans
    raise ConfigError(f"could not draw a plan mix within ±{tol} of MACs fraction {target}; use more requests")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn: Callable[[], Any], dev: torch.device) -> tuple[float, float]:
    """(wall-clock s, CPU s of this process). On a shared CPU the CPU time is the load-robust view of the same
    work: it does not count time spent waiting for a core (meaningless on CUDA, where kernels run off the CPU)."""
    _sync(dev)
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - t0, time.process_time() - c0


@dataclasses.dataclass
class Bench:
    """The timed objects: backbone, executor over every plan, and the plan mix."""

    bb: Any
    ex: AdaptiveExecutor
    masks: np.ndarray
    macs_frac: np.ndarray
    probs: np.ndarray
    theta: float
    dev: torch.device
    full: Callable[[torch.Tensor], torch.Tensor]
    x_big: torch.Tensor


def build_bench(cfg: Config) -> Bench:
    """Backbone (reference checkpoint, or random weights: speed does not depend on them), executor, plan mix."""
    dev = torch.device(cfg.device)
    ckpt = cfg.checkpoint if cfg.checkpoint and Path(cfg.checkpoint).is_file() else None
    if cfg.checkpoint and ckpt is None:
        print(f"note: checkpoint {cfg.checkpoint} not found; using random weights (speed does not depend on them)")
    bb = load_backbone(cfg.backbone, checkpoint=ckpt, device=dev)
    nb = bb.num_blocks
    if nb > 16:
        raise ConfigError(f"{cfg.backbone} has {nb} blocks; this benchmark enumerates all 2^B plans (B ≤ 16)")
    masks = all_plans(nb)
    compile_mode = "reduce-overhead" if cfg.cuda_graphs else None
    ex = AdaptiveExecutor(bb, masks, strategy=cfg.strategy, channels_last=cfg.channels_last, compile=cfg.compile,
                          compile_mode=compile_mode, bucket=cfg.bucket)
    macs_frac = ex.plan_cost  # MACs fractions (no plan_cost given)
    # "depth" restricts the mix to the B+1 plans that run blocks 0..k-1 — what a scheduler choosing among few plans
    # (a LUT, a Pareto set) produces; a batch then holds few distinct plans and grouping by plan pays off.
    allowed = np.arange(len(masks)) if cfg.mix == "all" else np.array([(1 << k) - 1 for k in range(nb + 1)])
    sub_probs, theta = tilted_plan_probs(macs_frac[allowed], cfg.target_macs)
    probs = np.zeros(len(masks))
    probs[allowed] = sub_probs
    print(f"device: {device_name(dev)}; backbone {cfg.backbone} ({'checkpoint' if ckpt else 'random init'}), {nb} "
          f"blocks, {len(masks)} plans; load average at start {os.getloadavg()[0]:.2f}")
    print(f"plan mix ({cfg.mix}, {len(allowed)} plans): i.i.d. per request, p ∝ exp({theta:.3f}·MACs), expected MACs "
          f"fraction {probs @ macs_frac:.3f}; strategy {cfg.strategy}, compile {cfg.compile}, CUDA graphs "
          f"{cfg.cuda_graphs}")
    full_fn: Callable[[torch.Tensor], torch.Tensor] = bb
    if cfg.channels_last:
        bb.to(memory_format=torch.channels_last)
    if cfg.compile:
        full_fn = torch.compile(bb, mode=compile_mode, dynamic=False)

    def full(x: torch.Tensor) -> torch.Tensor:
        if cfg.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        return full_fn(x)

    gen = torch.Generator().manual_seed(cfg.seed)
    x_big = torch.rand((cfg.big_batch,) + tuple(bb.input_size), generator=gen).to(dev)
    if cfg.channels_last:
        x_big = x_big.contiguous(memory_format=torch.channels_last)
    return Bench(bb, ex, masks, macs_frac, probs, theta, dev, full, x_big)


def time_batch_size(cfg: Config, b: Bench, bs: int, rng: np.random.Generator) -> dict[str, Any]:
    """Full model and engine timed alternately for ``cfg.rounds`` rounds at batch size ``bs``."""
    budgets = 1.0  # the scheduler below ignores budgets; the mix fixes the plans
    n_req = cfg.b1_requests if bs == 1 else 1
    xs = [b.x_big[(i * bs) % cfg.big_batch:][:bs] for i in range(n_req)]
    # warm-up: both paths, so lazy initialisation / compilation is not timed; compiled paths see a new subset size
    # now and then (a recompile / CUDA-graph recording), so they warm up more
    for _ in range(6 if cfg.compile else 2 if b.dev.type == "cuda" else 1):
        b.full(xs[0])
        b.ex.run(xs[0], lambda f, bud: rng.choice(len(b.masks), size=bs, p=b.probs), budgets)
    t_full, t_eng, c_full, c_eng, mix_cost = [], [], [], [], []
    for r in range(cfg.rounds):
        plans = _draw_mix(rng, b.probs, b.macs_frac, n_req, bs, cfg.target_macs)
        mix_cost.append(float(np.mean([b.macs_frac[p].mean() for p in plans])))
        t, c = _timed(lambda: [b.full(x) for x in xs], b.dev)
        t_full.append(t)
        c_full.append(c)
        t, c = _timed(lambda: [b.ex.run(x, lambda f, bud, p=p: p, budgets) for x, p in zip(xs, plans)], b.dev)
        t_eng.append(t)
        c_eng.append(c)
        print(f"  batch {bs:>4} round {r}: full {n_req * bs / t_full[-1]:8.1f} img/s, engine "
              f"{n_req * bs / t_eng[-1]:8.1f} img/s (mix MACs {mix_cost[-1]:.3f}), "
              f"ratio {t_full[-1] / t_eng[-1]:.2f} (CPU-time ratio {c_full[-1] / c_eng[-1]:.2f})")
    res = {"full_img_s": n_req * bs / float(np.median(t_full)), "engine_img_s": n_req * bs / float(np.median(t_eng)),
           "speedup_median_paired": float(np.median(np.array(t_full) / np.array(t_eng))),
           "speedup_best": float(min(t_full) / min(t_eng)),
           "cpu_time_speedup_median_paired": float(np.median(np.array(c_full) / np.array(c_eng))),
           "mix_macs_fraction": float(np.mean(mix_cost)), "full_s": t_full, "engine_s": t_eng, "full_cpu_s": c_full,
           "engine_cpu_s": c_eng}
    print(f"batch {bs}: speedup {res['speedup_median_paired']:.2f}× (engine {res['engine_img_s']:.1f} img/s vs full "
          f"{res['full_img_s']:.1f} img/s)")
    return res


def check_latency_model(cfg: Config, b: Bench, rng: np.random.Generator) -> dict[str, Any]:
    """Per-block latency profile, validated against end-to-end forwards of plans from the mix."""
    prof = profile_latency(b.bb, batch_sizes=(1, cfg.big_batch), repeats=cfg.latency_repeats, warmup=1,
                           seed=cfg.seed, clock=cfg.latency_clock)
    check = rng.choice(len(b.masks), size=cfg.validate_plans, p=b.probs, replace=False)
    check_masks = b.masks[np.unique(np.concatenate([[0, len(b.masks) - 1], check]))]
    lat: dict[str, Any] = {"device": prof.device, "clock": cfg.latency_clock}
    for bs in (1, cfg.big_batch):
        val = validate_latency_model(b.bb, prof, check_masks, batch_size=bs, repeats=cfg.latency_repeats)
        # Per-row additive prediction of the engine's speedup on the mix (ignores gather/scatter overhead).
        pred = prof.full_ms(bs) / float(b.probs @ plan_latency_ms(prof, b.masks, bs))
        lat[f"b{bs}"] = {"mean_rel_err": val.mean_rel_err, "max_rel_err": val.max_rel_err,
                         "predicted_mix_speedup": pred, "validation": val.to_dict()}
        print(f"latency model b{bs}: mean rel. error {val.mean_rel_err:.1%}, max {val.max_rel_err:.1%} over "
              f"{len(check_masks)} plans ({cfg.latency_clock} clock); predicts mix speedup {pred:.2f}×")
    if cfg.out:
        save_profile(prof, Path(cfg.out) / "latency_profile.json")
    return lat


def summarize(cfg: Config, b: Bench, results: dict[str, Any], load_start: float) -> dict[str, Any]:
    """The JSON line: speedups, rates, latency-model errors and the conditions they were measured under."""
    big = cfg.big_batch
    cpu = b.dev.type == "cpu"  # CPU time of this process is only meaningful when the CPU does the work
    summary = {
        "speedup_b1": round(results["b1"]["speedup_median_paired"], 3),
        f"speedup_b{big}": round(results[f"b{big}"]["speedup_median_paired"], 3),
        "cpu_time_speedup_b1": round(results["b1"]["cpu_time_speedup_median_paired"], 3) if cpu else None,
        f"cpu_time_speedup_b{big}": round(results[f"b{big}"]["cpu_time_speedup_median_paired"], 3) if cpu else None,
        "device": results["device"], "threads": torch.get_num_threads(), "mix": cfg.mix,
        "mix_macs_fraction": round(float(b.probs @ b.macs_frac), 4),
        "engine_img_s_b1": round(results["b1"]["engine_img_s"], 2),
        "full_img_s_b1": round(results["b1"]["full_img_s"], 2),
        f"engine_img_s_b{big}": round(results[f"b{big}"]["engine_img_s"], 2),
        f"full_img_s_b{big}": round(results[f"b{big}"]["full_img_s"], 2),
        "strategy": cfg.strategy, "compile": cfg.compile, "cuda_graphs": cfg.cuda_graphs,
        "load_avg_start": round(load_start, 2), "load_avg_end": round(os.getloadavg()[0], 2),
        "torch": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    if "latency_model" in results:
        for bs in (1, big):
            summary[f"latency_mean_rel_err_b{bs}"] = round(results["latency_model"][f"b{bs}"]["mean_rel_err"], 4)
            summary[f"latency_max_rel_err_b{bs}"] = round(results["latency_model"][f"b{bs}"]["max_rel_err"], 4)
        summary["latency_clock"] = cfg.latency_clock
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(Config, argv, description=__doc__.split("\n\n")[0], raise_errors=True)
    torch.set_num_threads(cfg.threads)
    load_start = os.getloadavg()[0]
    b = build_bench(cfg)
    rng = np.random.default_rng(cfg.seed)
    results: dict[str, Any] = {"config": dataclasses.asdict(cfg), "device": device_name(b.dev), "theta": b.theta}
    with torch.inference_mode():
        for bs in (1, cfg.big_batch):
            results[f"b{bs}"] = time_batch_size(cfg, b, bs, rng)
    if not cfg.skip_latency:
        results["latency_model"] = check_latency_model(cfg, b, rng)
    summary = summarize(cfg, b, results, load_start)
    results["summary"] = summary
    if cfg.out:
        atomic_write_json(Path(cfg.out) / "results.json", results)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    run_script(main)
