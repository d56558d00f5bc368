"""Pictures of one AdaInf step, for ``render_mode="ansi"`` (a text line) and ``"rgb_array"`` (a uint8 frame).

The frame (``FRAME_HEIGHT`` × ``FRAME_WIDTH`` × 3, drawn with numpy only, so recording a video adds little to a
step), top to bottom:

1. the plan: one cell per skippable block, dark blue = executed, light grey = skipped;
2. the cost bar: the full width is the full model; the cost paid is filled blue up to the budget and red beyond it
   (the overrun); a black tick marks the budget;
3. the outcome strip: green = correct prediction, red = wrong, grey = no step yet;

with the budget (``B``), cost (``C``) and reward (``R``) printed as numbers in a 3×5 pixel font.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["FRAME_HEIGHT", "FRAME_WIDTH", "render_frame", "render_text"]

FRAME_HEIGHT = 128
FRAME_WIDTH = 256
_MARGIN = 8
_SCALE = 2  # font pixels per glyph pixel

_WHITE = (255, 255, 255)
_RUN = (31, 58, 147)
_SKIP = (215, 215, 215)
_PAID = (66, 133, 244)
_OVER = (219, 68, 55)
_RIGHT = (15, 157, 88)
_WRONG = (219, 68, 55)
_NONE = (160, 160, 160)
_INK = (0, 0, 0)

# 3×5 glyphs, rows top to bottom, "1" = ink.
_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": ("111", "101", "101", "101", "111"), "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"), "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"), "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"), "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"), "9": ("111", "101", "111", "001", "111"),
    ".": ("000", "000", "000", "000", "010"), "-": ("000", "000", "111", "000", "000"),
    " ": ("000", "000", "000", "000", "000"), "B": ("110", "101", "110", "101", "110"),
    "C": ("111", "100", "100", "100", "111"), "R": ("110", "101", "110", "101", "101"),
}
_GLYPH_MASKS = {k: np.array([[c == "1" for c in row] for row in v]) for k, v in _GLYPHS.items()}


def _text(img: np.ndarray, x: int, y: int, s: str) -> None:
    """Write ``s`` (digits, '.', '-', ' ', 'B', 'C', 'R') at pixel (x, y), clipped to the frame."""
    for ch in s:
        m = np.kron(_GLYPH_MASKS.get(ch, _GLYPH_MASKS[" "]), np.ones((_SCALE, _SCALE), dtype=bool))
        h, w = m.shape
        if x + w > img.shape[1] or y + h > img.shape[0]:
            return
        img[y:y + h, x:x + w][m] = _INK
        x += w + _SCALE


def render_frame(step: Mapping[str, Any], plan_masks: np.ndarray) -> np.ndarray:
    """The frame of one step: ``step`` holds ``budget`` and, after a step, ``plan``, ``cost``, ``overrun``,
    ``correct`` and ``reward`` (``None`` before the first step); ``plan_masks`` [P, B] maps plans to blocks."""
    img = np.empty((FRAME_HEIGHT, FRAME_WIDTH, 3), dtype=np.uint8)
    img[...] = _WHITE
    width = FRAME_WIDTH - 2 * _MARGIN
    budget = float(step["budget"])
    plan = step.get("plan")
    nb = int(plan_masks.shape[1])
    # 1. the plan's blocks
    cell = max(1, width // max(nb, 1))
    mask = plan_masks[plan] if plan is not None else np.zeros(nb, dtype=bool)
    for j in range(nb):
        x0 = _MARGIN + j * cell
        img[_MARGIN:_MARGIN + 24, x0:x0 + max(1, cell - 2)] = _RUN if mask[j] else _SKIP
    # 2. cost paid against the budget (full width = the full model)
    y0, y1 = 40, 60
    img[y0:y1, _MARGIN:_MARGIN + width] = _SKIP
    if plan is not None:
        cost = float(step["cost"])
        paid = int(round(min(cost, budget) * width))
        img[y0:y1, _MARGIN:_MARGIN + paid] = _PAID
        if float(step.get("overrun") or 0.0) > 0.0:
            img[y0:y1, _MARGIN + paid:_MARGIN + int(round(min(cost, 1.0) * width))] = _OVER
    tick = _MARGIN + min(int(round(budget * width)), width - 1)
    img[y0 - 4:y1 + 4, max(tick - 1, 0):tick + 1] = _INK
    # 3. outcome
    correct = step.get("correct")
    img[68:80, _MARGIN:_MARGIN + width] = _NONE if correct is None else (_RIGHT if correct else _WRONG)
    # numbers
    _text(img, _MARGIN, 90, f"B{budget:.3f}" + (f" C{float(step['cost']):.3f}" if plan is not None else ""))
    if step.get("reward") is not None:
        _text(img, _MARGIN, 106, f"R{float(step['reward']):.3f}")
    return img


def render_text(step: Mapping[str, Any]) -> str:
    """One line about a step (or, before the first step, the pending request)."""
    if step.get("plan") is None:
        return f"sample {step['sample']} budget {float(step['budget']):.3f} (no step yet)"
    return (f"sample {step['sample']} budget {float(step['budget']):.3f} plan {step['plan']} "
            f"cost {float(step['cost']):.3f} {'correct' if step['correct'] else 'wrong'} "
            f"overrun {float(step['overrun']):.3f} reward {float(step['reward']):.3f}")
