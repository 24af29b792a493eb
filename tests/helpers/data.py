"""Tiny datasets the tests write themselves: ingest's raw layout, npz files, id-tagged and class-sorted tables."""

from __future__ import annotations

import struct
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


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_pima_like(path: Path, rows: int = 300) -> Path:
    """8 numeric columns in Pima's ranges; Outcome depends on glucose and BMI (like the real file)."""
    rng = np.random.default_rng(7)
    glucose, bmi = rng.normal(120, 30, rows).clip(0, 199), rng.normal(32, 7, rows).clip(0, 67)
    columns = [
        rng.integers(0, 17, rows),
        glucose,
        rng.normal(69, 19, rows).clip(0, 122),
        rng.integers(0, 99, rows),
        rng.integers(0, 846, rows),
        bmi,
        rng.uniform(0.08, 2.42, rows),
        rng.integers(21, 81, rows),
    ]
    outcome = (0.04 * (glucose - 120) + 0.1 * (bmi - 32) + rng.normal(0, 0.5, rows) > 0).astype(int)
    lines = [
        ",".join(f"{value:g}" for value in row) for row in zip(*columns, outcome, strict=False)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


FEATURES = ["a", "b", "c", "d", "e"]
WEIGHTS = np.array([3.0, 1.5, -4.0, 0.8, 2.0])
CITY_EFFECT = {"north": 0.0, "south": 4.0, "east": -3.0}


def write_regression_csv(path: Path, rows: int = 600, seed: int = 5) -> Path:
    """``price`` = 20 + a linear combination of 5 numeric features + a city effect + N(0, 0.5) noise."""
    rng = np.random.default_rng(seed)
    features = rng.normal(0, 1, (rows, 5)) * [1, 2, 0.5, 3, 1] + [0, 10, -1, 5, 2]
    city = rng.choice(sorted(CITY_EFFECT), rows)
    price = (
        20
        + features @ WEIGHTS
        + np.array([CITY_EFFECT[name] for name in city])
        + rng.normal(0, 0.5, rows)
    )
    lines = [",".join([*FEATURES, "city", "price"])]
    lines += [
        ",".join([*(f"{value:.4f}" for value in row), name, f"{target:.4f}"])
        for row, name, target in zip(features, city, price, strict=False)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def ingest_and_preprocess(config):
    """Run ingest then preprocess for ``config`` (its ``paths.raw``/``paths.processed``), in this process; return it."""
    from pipeline.data.ingest import run_ingest
    from pipeline.data.preprocess import run_preprocess

    run_ingest(config.data, Path(config.paths.raw))
    run_preprocess(
        config.preprocess, config.seed, Path(config.paths.raw), Path(config.paths.processed)
    )
    return config
