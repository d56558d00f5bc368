"""The experiment lab behind ``experiments/``: data → backbone (trained or loaded) → cached outcome tables →
scheduler → evaluation → a run directory (config, git revision, results.json, CSV, TensorBoard events, plots)."""
