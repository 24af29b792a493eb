"""Ingest stage: load a source, validate it, write arrays plus ``manifest.json``.

Output contract (``paths.raw``): ``x.npy``, ``y.npy`` and ``manifest.json`` with the source name,
example count, per-class counts, class names, shape, dtype and SHA-256 checksums of the arrays.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.io import atomic_dir, sha256_file, write_json
from pipeline.settings import DataSettings
from pipeline.sources import RawData, load_source

logger = logging.getLogger(__name__)


def validate_examples(data: RawData) -> RawData:
    """Check shapes, dtypes, label range and finiteness; return the data with a channel axis.

    Raises:
        UserError: one line naming the problem and how to fix it.
    """
    x, y, name = data.x, data.y, data.source
    if x.ndim == 3:  # grey images without a channel axis
        x = x[..., np.newaxis]
    if x.ndim not in (2, 4):
        raise UserError(f"data '{name}': features have shape {x.shape}: expected (n, features) or (n, height, width[, channels])")
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(f"data '{name}': labels have shape {y.shape} for {len(x)} examples: expected one integer label per example")
    if len(x) == 0:
        raise UserError(f"data '{name}': no examples: check the source file")
    if not np.issubdtype(x.dtype, np.number):
        raise UserError(f"data '{name}': features have dtype {x.dtype}: expected numbers")
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"data '{name}': labels have dtype {y.dtype}: expected integer class indices")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if bad.any():
            raise UserError(f"data '{name}': {int(bad.sum())} examples contain NaN or inf (first at index {int(np.argmax(bad))}): clean or drop them")
    num_classes = len(data.class_names)
    if y.min() < 0 or y.max() >= num_classes:
        raise UserError(f"data '{name}': labels span {int(y.min())}..{int(y.max())}: expected 0..{num_classes - 1} for {num_classes} classes")
    present = np.unique(y)
    if len(present) < 2:
        raise UserError(f"data '{name}': every example has label {data.class_names[int(present[0])]!r}: a classifier needs at least two classes")
    return RawData(x=x, y=y, class_names=data.class_names, source=name)


def run_ingest(settings: DataSettings, output_dir: Path) -> dict:
    """Load ``settings.name``, validate it and write ``x.npy``, ``y.npy``, ``manifest.json``.

    Returns:
        The manifest written.
    """
    data = validate_examples(load_source(settings))
    counts = np.bincount(data.y, minlength=len(data.class_names))
    with atomic_dir(Path(output_dir)) as tmp:
        np.save(tmp / "x.npy", data.x)
        np.save(tmp / "y.npy", data.y)
        manifest = {
            "source": data.source,
            "num_examples": int(len(data.x)),
            "class_names": data.class_names,
            "class_counts": {name: int(count) for name, count in zip(data.class_names, counts)},
            "feature_shape": list(data.x.shape[1:]),
            "feature_dtype": str(data.x.dtype),
            "checksums": {name: sha256_file(tmp / name) for name in ("x.npy", "y.npy")},
        }
        write_json(tmp / "manifest.json", manifest)
    logger.info("Ingested %d examples of '%s' (%d classes, shape %s)", len(data.x), data.source, len(data.class_names), data.x.shape[1:])
    return manifest
