"""Pictures of one anytime step (``render_mode="rgb_array"`` / ``"ansi"`` of the anytime envs).

The frame is :func:`adainf_env.envs.render.render_frame`'s, read for a request in flight: the plan cells are the blocks
run so far, the cost bar is what the request has spent against its budget (red beyond it), the outcome strip turns
green or red once the request has answered (grey before). The text line names the block, the action and the costs.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from adainf_env.envs.anytime.actions import ACTION_NAMES
from adainf_env.envs.anytime.core import RequestBatch
from adainf_env.envs.render import render_frame
from adainf_env.envs.reward import overrun_paid

__all__ = ["step_record", "pending_record", "render_anytime"]


def _request(batch: RequestBatch, i: int) -> dict[str, Any]:
    spent, budget = float(batch.spent[i]), float(batch.budget[i])
    return {"sample": int(batch.row[i]), "budget": budget, "spent": spent, "overrun": overrun_paid(spent, budget),
            "plan": int(batch.table.code_to_plan[batch.code[i]]), "answer": int(batch.answer[i])}


def step_record(batch: RequestBatch, i: int, *, action: int | str, position: int, cost: float, reward: float,
                correct: bool | None) -> dict[str, Any]:
    """What slot ``i`` of ``batch`` looks like right after a step (take it before the slot starts a new request):
    ``action`` (a block action's index, or an action's name) taken at block ``position``, paying ``cost``;
    ``correct`` is None while the request is in flight."""
    name = action if isinstance(action, str) else ACTION_NAMES[action]
    return {**_request(batch, i), "action": name, "position": int(position), "step_cost": float(cost),
            "reward": float(reward), "correct": correct}


def pending_record(batch: RequestBatch, i: int) -> dict[str, Any]:
    """Slot ``i`` before its first step (the stem paid, nothing decided)."""
    return {**_request(batch, i), "action": None, "position": 0, "step_cost": 0.0, "reward": None, "correct": None}


def render_anytime(mode: str, rec: Mapping[str, Any] | None, plan_masks: np.ndarray) -> np.ndarray | str:
    """A uint8 frame (``"rgb_array"``) or a text line (``"ansi"``) of ``rec`` (``None``: before any reset)."""
    if mode == "ansi":
        if rec is None:
            return "no request yet (call reset())"
        if rec["action"] is None:
            return f"sample {rec['sample']} budget {rec['budget']:.4f} spent {rec['spent']:.4f} (no step yet)"
        line = (f"sample {rec['sample']} block {rec['position']} {rec['action']} cost {rec['step_cost']:.4f} "
                f"spent {rec['spent']:.4f}/{rec['budget']:.4f}")
        if rec["correct"] is not None:
            line += f" → answer plan {rec['answer']} {'correct' if rec['correct'] else 'wrong'}"
        return line
    if rec is None:
        return render_frame({"budget": 1.0, "plan": None}, plan_masks)
    return render_frame({"budget": rec["budget"], "plan": rec["plan"], "cost": rec["spent"],
                         "overrun": rec["overrun"], "correct": rec["correct"], "reward": rec["reward"]}, plan_masks)
