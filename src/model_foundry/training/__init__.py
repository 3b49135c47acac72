"""Training every architecture shares: the loop over a TrainState (loop.py, state.py), its hooks (hooks.py:
MLflow metrics, progress bar), reports (report.py: loss CSVs/PNG, timing log), AdamW + warmup/cosine
(optim.py), and device/precision/thread choice (device.py)."""
