"""Non-learned schedulers: static plans (``lut``, ``hull_mix``, ``random``), bounds (``lut_upper``, ``oracle``) and
cascades that run a cheap plan first and escalate when unsure."""

from agents.baselines.cascades import AgreementCascade, ConfidenceCascade
from agents.baselines.static import (
    HullMixScheduler,
    LUTScheduler,
    LUTUpperScheduler,
    OracleScheduler,
    RandomScheduler,
)

__all__ = ["LUTScheduler", "LUTUpperScheduler", "HullMixScheduler", "RandomScheduler", "OracleScheduler",
           "ConfidenceCascade", "AgreementCascade"]
