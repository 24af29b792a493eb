"""Data sources, looked up by name: each returns raw examples ``(x, y, class_names)``.

``x`` is ``uint8``/float with shape ``(n, height, width, channels)`` for images or
``(n, features)`` for tables; ``y`` holds integer labels. Validation happens in
:mod:`pipeline.ingest`, so every source gets the same checks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.errors import UserError
from pipeline.settings import DataSettings

logger = logging.getLogger(__name__)


@dataclass
class RawData:
    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    source: str


def load_digits(settings: DataSettings) -> RawData:
    """scikit-learn's bundled digits: 1,797 real 8x8 grey images (0-16), ten classes, offline."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = bunch.images.astype(np.uint8)[..., np.newaxis]
    return RawData(x=x, y=bunch.target.astype(np.int64), class_names=[str(c) for c in bunch.target_names], source="digits")


def _read_keras_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read Keras's ``mnist.npz`` layout (x_train, y_train, x_test, y_test) into one pool."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
            if missing:
                raise UserError(f"data: {path} lacks arrays {sorted(missing)}: expected Keras's mnist.npz layout (x_train, y_train, x_test, y_test)")
            x = np.concatenate([archive["x_train"], archive["x_test"]])
            y = np.concatenate([archive["y_train"], archive["y_test"]])
    except (OSError, ValueError) as error:
        raise UserError(f"data: cannot read {path} as .npz ({error}): provide Keras's mnist.npz file") from None
    return x, y


def load_mnist(settings: DataSettings) -> RawData:
    """MNIST through Keras's loader, or from ``data.path`` (a file in Keras's ``mnist.npz`` format)."""
    if settings.path:
        path = Path(settings.path)
        if not path.is_file():
            raise UserError(f"data: data.path={settings.path} does not exist: place Keras's mnist.npz there or unset data.path to download")
    else:
        path = _keras_download("mnist.npz", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz", settings)
    x, y = _read_keras_npz(path)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    return RawData(x=x, y=y.astype(np.int64), class_names=[str(c) for c in range(10)], source="mnist")


def load_npz(settings: DataSettings) -> RawData:
    """Your own arrays: ``data.path`` is an ``.npz`` with ``x`` (features or images) and ``y`` (integer labels).

    Optional ``class_names`` array; otherwise classes are named ``0..max(y)``.
    """
    if not settings.path:
        raise UserError("data: data=npz needs data.path=/path/to/file.npz (arrays x and y)")
    path = Path(settings.path)
    if not path.is_file():
        raise UserError(f"data: data.path={settings.path} does not exist: point data.path at an .npz file with arrays x and y")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise UserError(f"data: {path} lacks arrays {sorted(missing)}: save it with np.savez(path, x=features, y=labels)")
            x, y = archive["x"], archive["y"]
            names = [str(name) for name in archive["class_names"]] if "class_names" in archive.files else None
    except (OSError, ValueError) as error:
        raise UserError(f"data: cannot read {path} as .npz ({str(error).splitlines()[0]}): save it with np.savez(path, x=..., y=...)") from None
    if names is None:
        top = int(y.max()) if y.size and np.issubdtype(y.dtype, np.integer) else 0
        names = [str(index) for index in range(top + 1)]
    return RawData(x=x, y=y, class_names=names, source="npz")


def _keras_download(filename: str, origin: str, settings: DataSettings) -> Path:
    """Fetch a file into Keras's cache (or ``data.cache_dir``); one clear line when offline."""
    import tensorflow as tf

    cache_dir = Path(settings.cache_dir).expanduser() if settings.cache_dir else Path.home() / ".keras"
    try:
        return Path(tf.keras.utils.get_file(filename, origin=origin, cache_dir=str(cache_dir), cache_subdir="datasets"))
    except Exception as error:  # get_file raises bare Exception subclasses for network failures
        target = cache_dir / "datasets" / filename
        raise UserError(
            f"data: could not download {filename} ({type(error).__name__}): place the file at {target} or set data.path"
        ) from None


SOURCES: dict[str, Callable[[DataSettings], RawData]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "npz": load_npz,
}


def load_source(settings: DataSettings) -> RawData:
    """Load the source named by ``settings.name``.

    Raises:
        UserError: unknown name (listing the valid ones) or missing/unreadable file.
    """
    if settings.name not in SOURCES:
        raise UserError(f"data: unknown dataset '{settings.name}': choose one of {', '.join(sorted(SOURCES))}")
    logger.info("Loading source '%s'", settings.name)
    return SOURCES[settings.name](settings)
