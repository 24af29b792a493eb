"""A trained model on disk: what the train stage writes and evaluate, export and predict load.

``paths.models`` holds ``model.keras`` (tf-keras's v3 format) and ``history.json`` (per-epoch
metrics); Ray checkpoints have the same two files plus the callbacks' patience counters.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from pathlib import Path

import numpy as np

from pipeline.errors import UserError

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"
CURVES_DIR = "curves"  # one epoch,train,validation CSV per compiled metric (dvc.yaml's plots)
LEARNING_RATE_FILE = "learning_rate.csv"  # epoch,learning_rate
RUN_FILE = (
    "run.json"  # the run's metadata: run name, TensorBoard dir, workers, and a user model's module
)


def save_model(model, history: dict, directory: Path, callbacks=()) -> Path:
    """Write ``model.keras``, ``history.json`` and the patience counters of ``callbacks`` into ``directory``; return it."""
    from pipeline.training.callbacks import save_callback_state

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Explicit format: tf-keras keeps its "native format enabled" flag in a thread-local that its
    # own save_model resets to False in threads other than the importing one (Ray runs the train
    # loop in a thread), so a second save with the inferred format silently writes HDF5.
    with _lean_attribute_walk():
        model.save(str(directory / MODEL_FILE), save_format="keras_v3")
    (directory / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n")
    if callbacks:
        save_callback_state(callbacks, directory)
    return directory


# Attributes tf-keras's `.keras` saving and loading need not read. Both walk every attribute of
# every layer, metric and optimizer (`saving_lib._walk_trackable`: `dir()`, then `getattr()` of
# each) looking for objects with state. `_tracking_metadata` is a property that serialises a
# layer's legacy SavedModel metadata to a JSON string, never an object with state; it was 60% of
# saving MobileNetV2 (0.74 of 1.2 s), paid at every checkpoint and every load.
UNSTATEFUL_ATTRIBUTES = frozenset({"_tracking_metadata"})


@contextlib.contextmanager
def _lean_attribute_walk():
    """tf-keras's `.keras` saving and loading skip :data:`UNSTATEFUL_ATTRIBUTES` in their walk (the
    same files are written and read: ``tests/training/test_model_io.py``)."""
    from tf_keras.src.saving import saving_lib

    before = saving_lib.ATTR_SKIPLIST
    saving_lib.ATTR_SKIPLIST = before | UNSTATEFUL_ATTRIBUTES
    try:
        yield
    finally:
        saving_lib.ATTR_SKIPLIST = before


def _seek_stored_member(member, offset: int, whence: int = 0) -> int:
    """``zipfile.ZipExtFile.seek`` that jumps straight to the position in a stored (uncompressed,
    unencrypted) member, as an ordinary file seeks; other members seek as the standard library does."""
    if member._compress_type != zipfile.ZIP_STORED or member._decrypter is not None:
        return _ZIP_MEMBER_SEEK(member, offset, whence)
    base = {0: 0, 1: member.tell(), 2: member._orig_file_size}[whence]
    position = min(max(base + offset, 0), member._orig_file_size)
    member._fileobj.seek(member._orig_compress_start + position)
    member._left = member._compress_left = member._orig_file_size - position
    member._readbuffer, member._offset, member._eof = b"", 0, False
    member._expected_crc = None  # a CRC over part of the member proves nothing
    return position


_ZIP_MEMBER_SEEK = zipfile.ZipExtFile.seek


@contextlib.contextmanager
def _direct_zip_seeks():
    """Seek inside ``model.keras``'s stored weights file directly while a model loads.

    tf-keras reads ``model.weights.h5`` with h5py straight out of the archive, and h5py seeks back
    and forth; Python 3.11's zipfile serves every backward seek by reading the member again from
    its start, so a load reads the weights many times over: ResNet50 with its optimizer's state
    took 66.8 s to load, 3.3 s with direct seeks (``bench/model_files.py``, docs/benchmarks.md).
    """
    zipfile.ZipExtFile.seek = _seek_stored_member
    try:
        yield
    finally:
        zipfile.ZipExtFile.seek = _ZIP_MEMBER_SEEK


def load_keras_model(path: Path, compile: bool = False):
    """``tf.keras.models.load_model(path)`` of a ``.keras`` file, with :func:`_direct_zip_seeks` and
    :func:`_lean_attribute_walk`."""
    from pipeline.env import import_tensorflow

    tf = import_tensorflow()
    with _direct_zip_seeks(), _lean_attribute_walk():
        return tf.keras.models.load_model(str(path), compile=compile)


def load_trained_model(models_dir: Path):
    """Load ``models/model.keras`` written by the train stage (one clear line if it is missing).

    A user model's module (``run.json`` ``model_module``, from ``model.builder``) is imported first,
    so the custom layers it registers load.
    """
    from pipeline.training.custom import import_model_module

    path = Path(models_dir) / MODEL_FILE
    if not path.is_file():
        raise UserError(
            f"evaluate: no trained model at {path}: run the train stage first (dvc repro train)"
        )
    run = Path(models_dir) / RUN_FILE
    import_model_module(json.loads(run.read_text()).get("model_module") if run.is_file() else None)
    return load_keras_model(path)


PREDICT_CHUNK_BATCHES = 64  # batches per model.predict call: one progress step


def predict_with_progress(model, x, batch_size: int, desc: str) -> np.ndarray:
    """``model.predict(x)`` in chunks of :data:`PREDICT_CHUNK_BATCHES` batches, with progress
    (:mod:`pipeline.progress`). ``x`` is an array, or a dict of arrays for a model with several
    inputs (the embedded table features)."""
    from pipeline.progress import Progress

    def rows(start: int, stop: int):
        if isinstance(x, dict):
            return {key: value[start:stop] for key, value in x.items()}
        return x[start:stop]

    total = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    step = batch_size * PREDICT_CHUNK_BATCHES
    outputs = []
    with Progress(total, desc, unit="example") as progress:
        for start in range(0, total, step):
            outputs.append(
                np.asarray(
                    model.predict(rows(start, start + step), batch_size=batch_size, verbose=0)
                )
            )
            progress.update(len(outputs[-1]))
    return np.concatenate(outputs) if outputs else np.zeros((0,))


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Model outputs as an ``(n, num_classes)`` probability matrix (a sigmoid unit becomes 2 columns)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs
