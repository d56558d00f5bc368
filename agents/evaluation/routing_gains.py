"""What each scheduler gains on a table where per-input routing provably pays under a hard per-request budget.

On :func:`adainf_env.tables.toy.make_toy_table` (nested requirements: type t needs blocks 0..t−1) the look-up table is
already optimal under a hard budget — the largest plan that fits covers every type that any plan within the budget
covers — so learners can only tie with ``lut`` there. :func:`adainf_env.tables.toy.make_routing_table` breaks that:
sample type t is classified correctly exactly when block t runs (plus a share of "easy" samples every plan gets right),
all blocks cost the same, and the type is visible in the features (one-hot + Gaussian noise). At a budget that pays
for k of B blocks the best static plan is right on ``easy + (1 − easy)·k/B`` of the samples, while running each
sample's own block is right on all of them (up to feature noise): the oracle − lut gap is what routing by the features
is worth.

:func:`routing_gain_records` fits schedulers on a calibration draw and evaluates them on a test draw (the harness's
bandit records); :func:`gain_table` turns the records into a markdown table of accuracy and captured share of the gap.
``python -m agents.evaluation.routing_gains`` prints the table for every learner with and without the LUT prior, each
trained with its defaults (``--quick``: the short :data:`QUICK_SETTINGS`); the row ``name+prior`` of a learner whose
default is ``prior=True`` is its default.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from adainf_env.errors import ConfigError
from adainf_env.tables.outcomes import OutcomeTable
from adainf_env.tables.toy import make_routing_table
from agents.evaluation.harness import evaluate_bandit
from agents.evaluation.report import summarize

__all__ = ["routing_gain_records", "gain_table", "ROUTING_BUDGETS", "DEFAULT_SETTINGS",
           "QUICK_SETTINGS"]

#: Budgets (fractions of the full model) that pay for 1, 2 and 3 of the 4 blocks of the default table.
ROUTING_BUDGETS: tuple[float, ...] = (0.4, 0.6, 0.8)

#: What the module's CLI (and :func:`routing_gain_records` by default) runs: every learner with its own defaults —
#: ``prior`` included — except that every plan is a candidate (``plans="all"``): on this table the calibration
#: accuracy/cost Pareto front keeps one plan per cost level, and the per-input alternatives are exactly the plans a
#: feature-blind frontier drops. ``blockdrop`` picks blocks, not plans.
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    **{n: {"plans": "all", "progress": False} for n in ("hinge", "reinforce", "lagrangian")},
    "blockdrop": {"progress": False},
    **{n: {"plans": "all"} for n in ("ppo", "a2c", "maskable_ppo", "dqn")},
}

#: Short training settings per learner (seconds each on one CPU core) for tests that only need *a* learner that
#: learns; the acceptance numbers (``python -m agents.evaluation.routing_gains``) use :data:`DEFAULT_SETTINGS`.
QUICK_SETTINGS: dict[str, dict[str, Any]] = {
    "hinge": {"epochs": 15, "plans": "all", "progress": False},
    "reinforce": {"epochs": 15, "plans": "all", "progress": False},
    "blockdrop": {"epochs": 25, "progress": False},
    "lagrangian": {"epochs": 15, "plans": "all", "progress": False},
    "ppo": {"total_timesteps": 16_384, "n_envs": 64, "eval_every": 4, "plans": "all"},
    "a2c": {"total_timesteps": 16_384, "n_envs": 64, "eval_every": 8, "plans": "all"},
    "maskable_ppo": {"total_timesteps": 16_384, "n_envs": 64, "eval_every": 4, "plans": "all"},
    "dqn": {"total_timesteps": 16_384, "n_envs": 32, "plans": "all"},
}


def routing_gain_records(names: Sequence[str], calib: OutcomeTable, test: OutcomeTable, *,
                         budgets: Sequence[float] = ROUTING_BUDGETS, seeds: Sequence[int] = (0,),
                         priors: Sequence[bool | None] = (None,),
                         settings: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Fit each scheduler of ``names`` on ``calib`` (per seed and per ``prior`` value — ``None`` = the default;
    baselines once per seed) with ``settings[name]`` (default :data:`DEFAULT_SETTINGS`: the learners' own defaults
    on every plan) and sweep ``budgets`` on ``test``. Learners' records are named ``name+prior`` / ``name-prior``
    when both prior values are asked for."""
    from agents.registry import BASELINES, make_scheduler  # the registry imports every scheduler module

    settings = dict(DEFAULT_SETTINGS if settings is None else settings)
    records: list[dict[str, Any]] = []
    for seed in seeds:
        for name in names:
            for prior in ([None] if name in BASELINES else list(priors)):
                kw = dict(settings.get(name, {}))
                if prior is not None:
                    kw["prior"] = prior
                try:
                    sched = make_scheduler(name, **kw)
                except ConfigError:
                    if prior:  # a policy with no LUT prior (blockdrop): reported without it only
                        continue
                    raise
                sched.fit(calib, seed=int(seed))
                recs = evaluate_bandit(sched, test, budgets, seed=int(seed))
                if len(priors) > 1 and name not in BASELINES:
                    for r in recs:
                        r["scheduler"] = f"{name}{'+' if r['prior'] else '-'}prior"
                records += recs
    return records


def gain_table(records: Sequence[Mapping[str, Any]], *, low: str = "lut", high: str = "oracle") -> str:
    """Markdown: accuracy % per scheduler and budget (mean over seeds) and the captured share of the
    ``high`` − ``low`` gap, ``(acc − low) / (high − low)``."""
    summary = [s for s in summarize(records) if s["setting"] == "bandit"]
    budgets = sorted({s["budget"] for s in summary})
    acc = {(s["scheduler"], s["budget"]): s["accuracy_mean"] for s in summary}
    names = list(dict.fromkeys(s["scheduler"] for s in summary))
    for ref in (low, high):
        if ref not in names:
            raise ConfigError(f"gain_table needs {ref!r} among the records")
    lines = ["| scheduler | " + " | ".join(f"{b:g}: acc % (gap captured)" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for n in names:
        cells = []
        for b in budgets:
            a, lo, hi = acc[(n, b)], acc[(low, b)], acc[(high, b)]
            share = f" ({100 * (a - lo) / (hi - lo):.0f} %)" if hi - lo > 1e-9 else ""
            cells.append(f"{100 * a:.1f}{share}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--learners", nargs="+", default=list(DEFAULT_SETTINGS))
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="short training (QUICK_SETTINGS) instead of the defaults")
    a = p.parse_args(argv)
    calib, test = make_routing_table(2000, seed=0), make_routing_table(2000, seed=1, split="test")
    recs = routing_gain_records(["lut", "oracle", *a.learners], calib, test, seeds=range(a.seeds),
                                priors=(True, False), settings=QUICK_SETTINGS if a.quick else DEFAULT_SETTINGS)
    print(gain_table(recs))


if __name__ == "__main__":
    main()
