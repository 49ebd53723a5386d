"""Ray Tune sweeps: search spaces (YAML), the per-trial trainable, tracking and the runner."""
