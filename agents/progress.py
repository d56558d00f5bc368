"""When the agents' progress bars are drawn: only on a terminal.

tqdm's carriage-return updates turn into thousands of lines in a log file, so every bar in :mod:`agents` passes
``disable=progress_disabled(progress)``.
"""

from __future__ import annotations

import sys

__all__ = ["progress_disabled"]


def progress_disabled(progress: bool | None) -> bool:
    """``progress`` False → no bar; True or None → a bar only when stderr is a terminal."""
    return progress is False or not sys.stderr.isatty()
