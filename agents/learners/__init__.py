"""Torch learners trained on outcome tables (``hinge``, ``reinforce``, ``blockdrop``, ``lagrangian``) and with the
live backbone (``hinge_live``). Import a learner's module directly (or use :func:`agents.make_scheduler`): importing
this package does not import torch."""
