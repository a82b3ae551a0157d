"""``hydra/launcher=ray`` (conf/hydra/launcher/ray.yaml): one Ray task per run (launcher.py, worker.py)."""
