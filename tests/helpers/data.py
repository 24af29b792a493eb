"""Tiny datasets the tests write themselves: ingest's raw layout, npz files, id-tagged and class-sorted tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)


def write_npz(path: Path, x: np.ndarray, y: np.ndarray, **extra) -> Path:
    np.savez(path, x=x, y=y, **extra)
    return path


def write_raw(
    directory: Path, x: np.ndarray, y: np.ndarray, split: np.ndarray | None = None
) -> Path:
    """What ingest writes (``x.npy``, ``y.npy``, ``manifest.json``, optional ``split.npy``), without a source."""
    from pipeline.io import write_json

    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "x.npy", x)
    np.save(directory / "y.npy", y.astype(np.int64))
    if split is not None:
        np.save(directory / "split.npy", split)
    num_classes = int(y.max()) + 1
    write_json(
        directory / "manifest.json",
        {
            "source": "test",
            "num_examples": len(y),
            "class_names": [f"c{i}" for i in range(num_classes)],
            "feature_shape": list(x.shape[1:]),
            "feature_dtype": str(x.dtype),
        },
    )
    return directory


def id_table(num_examples: int, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A table whose first column is the example's id (survives ``normalize=none``), labels cycling."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.arange(num_examples), rng.random(num_examples)])
    return x, np.arange(num_examples) % num_classes


def class_sorted_source(
    directory: Path,
    per_class: int,
    num_classes: int = 10,
    features: int = 8,
    spread: float = 1.6,
    seed: int = 0,
) -> Path:
    """Ingest's output for ``num_classes`` overlapping Gaussian blobs, written class after class (as an
    image folder's files are listed), so any order the pipeline keeps from the source shows up."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, (num_classes, features))
    y = np.repeat(np.arange(num_classes), per_class)
    x = (centres[y] + rng.normal(0.0, 1.0, (len(y), features))).astype(np.float32)
    return write_raw(directory, x, y)
