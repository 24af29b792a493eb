"""Thin DVC stage entry points: compose config with Hydra, call one ``pipeline`` function."""
