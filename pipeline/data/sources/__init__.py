"""Data sources, looked up by name: each returns raw examples as :class:`pipeline.data.records.RawData`.

``x`` is ``uint8`` with shape ``(n, height, width, channels)`` for images or ``float32``
``(n, features)`` for tables; ``y`` holds integer class indices. Record-level checks (NaN/inf,
labels outside the set) and the schema happen in :mod:`pipeline.data.ingest`, so every source gets the
same ones. Loaders take ``(settings, staging_dir, reference)``: the directory a streaming source
writes ``x.npy`` into, and the stored schema new data must match (or ``None``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.data.records import RawData, require_path
from pipeline.errors import UserError
from pipeline.settings import DataSettings

logger = logging.getLogger(__name__)

Loader = Callable[[DataSettings, Path | None, dict | None], RawData]


def _sklearn_table(name: str) -> RawData:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    return RawData(
        x=bunch.data.astype(np.float32),
        y=bunch.target.astype(np.int64),
        source=name,
        class_names=[str(c) for c in bunch.target_names],
        feature_names=[str(f) for f in bunch.feature_names],
    )


def load_digits(settings: DataSettings, staging_dir=None, reference=None) -> RawData:
    """scikit-learn's bundled digits: 1,797 real 8x8 grey images (0-16), ten classes, offline."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = bunch.images.astype(np.uint8)[..., np.newaxis]
    return RawData(
        x=x,
        y=bunch.target.astype(np.int64),
        class_names=[str(c) for c in bunch.target_names],
        source="digits",
    )


def load_npz(settings: DataSettings, staging_dir=None, reference=None) -> RawData:
    """Your own arrays: ``data.path`` is an ``.npz`` with ``x`` (features or images) and ``y`` (integer labels;
    with ``data.task=regression`` numeric targets, kept as float32).

    Optional ``class_names`` array; otherwise classes are named ``0..max(y)``. Optional ``x_test``
    and ``y_test``: your own test split, appended and kept apart by ``preprocess.test_split=source``.
    """
    path = require_path(settings, "file.npz (arrays x and y)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise UserError(
                    f"data: {path} lacks arrays {sorted(missing)}: save it with np.savez(path, x=features, y=labels)"
                )
            x, y, is_test = archive["x"], archive["y"], None
            test_arrays = {"x_test", "y_test"} & set(archive.files)
            if len(test_arrays) == 1:
                raise UserError(
                    f"data: {path} has {test_arrays.pop()} without its pair: save both x_test and y_test, or neither"
                )
            if test_arrays:
                from pipeline.data.sources.keras import split_mask

                is_test = split_mask(len(y), len(archive["y_test"]))
                x, y = (
                    np.concatenate([x, archive["x_test"]]),
                    np.concatenate([y, archive["y_test"]]),
                )
            names = (
                [str(name) for name in archive["class_names"]]
                if "class_names" in archive.files
                else None
            )
    except (OSError, ValueError) as error:
        raise UserError(
            f"data: cannot read {path} as .npz ({str(error).splitlines()[0]}): save it with np.savez(path, x=..., y=...)"
        ) from None
    if settings.task == "regression":  # y is the target itself: no classes
        return RawData(x=x, y=y, class_names=[], source="npz", is_test=is_test, task="regression")
    if names is None:
        top = int(y.max()) if y.size and np.issubdtype(y.dtype, np.integer) else 0
        names = [str(index) for index in range(top + 1)]
    return RawData(x=x, y=y, class_names=names, source="npz", is_test=is_test)


def _registry() -> dict[str, Loader]:
    from pipeline.data.sources.images import load_image_folder
    from pipeline.data.sources.keras import (
        load_cifar10,
        load_cifar100,
        load_fashion_mnist,
        load_mnist,
    )
    from pipeline.data.sources.tabular import load_csv

    tables = {
        name: (lambda settings, staging_dir=None, reference=None, name=name: _sklearn_table(name))
        for name in ("breast_cancer", "wine", "iris")
    }
    return {
        "digits": load_digits,
        "mnist": load_mnist,
        "fashion_mnist": load_fashion_mnist,
        "cifar10": load_cifar10,
        "cifar100": load_cifar100,
        "npz": load_npz,
        "csv": load_csv,
        "image_folder": load_image_folder,
        **tables,
    }


SOURCES: dict[str, Loader] = _registry()


def load_source(
    settings: DataSettings, staging_dir: Path | None = None, reference: dict | None = None
) -> RawData:
    """Load the source named by ``settings.name``.

    Args:
        settings: the ``data`` config.
        staging_dir: where a streaming source (``image_folder``) writes ``x.npy``; a temporary
            directory is used when ``None`` (the caller then owns nothing on disk).
        reference: a stored schema; sources with vocabularies (``csv``) encode with its.

    Raises:
        UserError: unknown name (listing the valid ones) or missing/unreadable file.
    """
    if settings.name not in SOURCES:
        raise UserError(
            f"data: unknown dataset '{settings.name}': choose one of {', '.join(sorted(SOURCES))}"
        )
    logger.info("Loading source '%s'", settings.name)
    return SOURCES[settings.name](settings, staging_dir, reference)
