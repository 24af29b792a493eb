"""Hydra launcher that runs sweep trials concurrently as Ray tasks (``hydra/launcher=ray_trials``)."""
