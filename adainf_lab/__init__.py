"""The experiment lab behind ``experiments/``: data → backbone (trained or loaded) → cached outcome tables →
scheduler → evaluation → a run directory (config, git revision, results.json, CSV, TensorBoard events, plots).

Modules: :mod:`~adainf_lab.config` (the run's configuration, demo sizes), :mod:`~adainf_lab.cli` (config dataclass →
command line, exit status 2 on bad input), :mod:`~adainf_lab.data` (where images come from),
:mod:`~adainf_lab.backbone` (trained / loaded backbone), :mod:`~adainf_lab.tables` (table directories, the table
cache), :mod:`~adainf_lab.scheduler_options` (typed ``--scheduler.*`` options), :mod:`~adainf_lab.pipeline` (the
end-to-end run), :mod:`~adainf_lab.report` (TensorBoard, headline plot, console table), :mod:`~adainf_lab.rundir`
(run directories), :mod:`~adainf_lab.ceiling` (how much feature-based routing can gain in the stream setting).
"""

# adainf_env sets the OpenMP wait policy (passive) before anything loads torch; importing it first gives every script
# that imports this package the same setting.
import adainf_env  # noqa: E402,F401
