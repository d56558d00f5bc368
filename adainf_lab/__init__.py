"""The experiment lab behind ``experiments/``: data → backbone (trained or loaded) → cached outcome tables →
scheduler → evaluation → a run directory (config, git revision, results.json, CSV, TensorBoard events, plots).

Modules: :mod:`~adainf_lab.config` (the run's configuration, demo sizes), :mod:`~adainf_lab.cli` (config dataclass →
command line, exit status 2 on bad input), :mod:`~adainf_lab.data` (where images come from),
:mod:`~adainf_lab.backbone` (trained / loaded backbone), :mod:`~adainf_lab.tables` (table directories, the table
cache), :mod:`~adainf_lab.scheduler_options` (typed ``--scheduler.*`` options), :mod:`~adainf_lab.pipeline` (the
end-to-end run), :mod:`~adainf_lab.report` (TensorBoard, headline plot, console table), :mod:`~adainf_lab.rundir`
(run directories), :mod:`~adainf_lab.ceiling` (how much feature-based routing can gain in the stream setting).
"""

import os

# The scripts import this package before torch. OpenMP threads that spin while waiting (libgomp's default) take the
# cores other threads and processes need on a shared or busy CPU, which slows backbone training and table building
# several-fold there; passive waiting costs little on an idle machine. OpenMP reads this once, when torch loads it,
# so it must be set before the first torch import. An explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
