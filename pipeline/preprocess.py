"""Preprocess stage: seeded stratified split, train-only normalisation, sharded output.

Output contract (``paths.processed``):
- ``{split}-{index:05d}.npz`` shards (arrays ``x`` float32, ``y`` int64) for ``train``, ``val``
  (``num_shards`` each, so several workers read disjoint files) and ``test`` (one shard);
- ``meta.json``: input shape, class names, shard file names and sizes, normalisation statistics.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.io import atomic_dir, read_json, write_json
from pipeline.settings import PreprocessSettings

logger = logging.getLogger(__name__)


def split_indices(y: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices, identical for the same labels and seed."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(y))
    try:
        rest, test = train_test_split(indices, test_size=test_fraction, stratify=y, random_state=seed)
        val_share = val_fraction / (1.0 - test_fraction)
        train, val = train_test_split(rest, test_size=val_share, stratify=y[rest], random_state=seed)
    except ValueError as error:
        raise UserError(f"preprocess: cannot split {len(y)} examples stratified ({error}): use more data or smaller val/test fractions") from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def fit_normalizer(x_train: np.ndarray, method: str) -> dict:
    """Statistics from the train split only: per feature for tables, one scalar for images."""
    axis = 0 if x_train.ndim == 2 else None
    x = x_train.astype(np.float64)
    if method == "minmax":
        low, high = x.min(axis=axis), x.max(axis=axis)
        return {"method": method, "offset": np.asarray(low).tolist(), "scale": np.asarray(np.maximum(high - low, 1e-12)).tolist()}
    if method == "standardize":
        return {"method": method, "offset": np.asarray(x.mean(axis=axis)).tolist(), "scale": np.asarray(np.maximum(x.std(axis=axis), 1e-12)).tolist()}
    return {"method": "none", "offset": 0.0, "scale": 1.0}


def apply_normalizer(x: np.ndarray, stats: dict) -> np.ndarray:
    """``(x - offset) / scale`` as float32."""
    offset = np.asarray(stats["offset"], dtype=np.float64)
    scale = np.asarray(stats["scale"], dtype=np.float64)
    return ((x.astype(np.float64) - offset) / scale).astype(np.float32)


def write_shards(directory: Path, split: str, x: np.ndarray, y: np.ndarray, num_shards: int) -> list[dict]:
    """Write ``x``/``y`` as ``num_shards`` near-equal ``.npz`` files; return their names and sizes."""
    shards = []
    for index, part in enumerate(np.array_split(np.arange(len(x)), num_shards)):
        name = f"{split}-{index:05d}.npz"
        np.savez(directory / name, x=x[part], y=y[part])
        shards.append({"file": name, "num_examples": int(len(part))})
    return shards


def run_preprocess(settings: PreprocessSettings, seed: int, input_dir: Path, output_dir: Path) -> dict:
    """Split, normalise and shard the ingested data.

    Returns:
        The ``meta.json`` content written.
    """
    input_dir = Path(input_dir)
    manifest = read_json(input_dir / "manifest.json")
    x, y = np.load(input_dir / "x.npy"), np.load(input_dir / "y.npy")
    splits = split_indices(y, settings.val_fraction, settings.test_fraction, seed)
    too_small = [name for name in ("train", "val") if len(splits[name]) < settings.num_shards]
    if too_small:
        raise UserError(f"preprocess: the {too_small[0]} split has {len(splits[too_small[0]])} examples for {settings.num_shards} shards: lower preprocess.num_shards")
    stats = fit_normalizer(x[splits["train"]], settings.normalize)
    meta = {
        "source": manifest["source"],
        "class_names": manifest["class_names"],
        "input_shape": manifest["feature_shape"],
        "normalization": stats,
        "seed": seed,
        "splits": {},
    }
    with atomic_dir(Path(output_dir)) as tmp:
        for name, indices in splits.items():
            shards = 1 if name == "test" else settings.num_shards
            meta["splits"][name] = write_shards(tmp, name, apply_normalizer(x[indices], stats), y[indices], shards)
        write_json(tmp / "meta.json", meta)
    logger.info("Split %d examples: train %d, val %d, test %d (normalize=%s, %d shards)", len(y),
                len(splits["train"]), len(splits["val"]), len(splits["test"]), settings.normalize, settings.num_shards)
    return meta


def load_split(processed_dir: Path, split: str, shard_files: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a split (or the given shard files of it) back into memory as ``(x, y)``."""
    processed_dir = Path(processed_dir)
    if shard_files is None:
        shard_files = [shard["file"] for shard in read_json(processed_dir / "meta.json")["splits"][split]]
    files = shard_files
    parts = [np.load(processed_dir / name) for name in files]
    return np.concatenate([part["x"] for part in parts]), np.concatenate([part["y"] for part in parts])
