"""Keras callbacks for a training run: those from config plus progress and Ray reporting."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.settings import TrainSettings

logger = logging.getLogger(__name__)


def _keras_callback_base():
    import tensorflow as tf

    return tf.keras.callbacks.Callback


CALLBACK_STATE_FILE = "callbacks.json"
BEST_WEIGHTS_FILE = "best_weights.npz"
# The counters Keras resets in on_train_begin, per callback; EarlyStopping's best weights go to BEST_WEIGHTS_FILE.
STATE_FIELDS = {
    "EarlyStopping": ("wait", "best", "best_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
}


def _resumable(base):
    """``base`` (EarlyStopping or ReduceLROnPlateau) whose ``resume_state``, if set, survives ``on_train_begin``.

    Keras resets the patience counters whenever ``fit`` starts, so without this a resumed run
    would wait ``patience`` more epochs than an uninterrupted one.
    """

    class Resumable(base):
        resume_state: dict | None = None

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            for name, value in (self.resume_state or {}).items():
                setattr(self, name, value)

    Resumable.__name__ = Resumable.__qualname__ = base.__name__
    return Resumable


def _stateful(callbacks) -> dict:
    """``{class name: callback}`` for the callbacks whose counters a checkpoint keeps."""
    return {
        type(callback).__name__: callback
        for callback in callbacks
        if type(callback).__name__ in STATE_FIELDS
    }


def save_callback_state(callbacks, directory: Path) -> None:
    """Write the patience counters (and EarlyStopping's best weights) of ``callbacks`` into ``directory``."""
    import numpy as np

    stateful = _stateful(callbacks)
    state = {
        name: {
            field: float(getattr(callback, field))
            if field == "best"
            else int(getattr(callback, field))
            for field in STATE_FIELDS[name]
        }
        for name, callback in stateful.items()
    }
    (Path(directory) / CALLBACK_STATE_FILE).write_text(
        json.dumps(state, indent=2) + "\n"
    )  # inf is written as Infinity
    best_weights = getattr(stateful.get("EarlyStopping"), "best_weights", None)
    if best_weights is not None:
        np.savez(Path(directory) / BEST_WEIGHTS_FILE, *best_weights)


def restore_callback_state(callbacks, directory: Path) -> None:
    """Hand ``callbacks`` the counters a checkpoint recorded; they apply them when ``fit`` starts.

    A checkpoint without :data:`CALLBACK_STATE_FILE` (written before it existed) restores nothing.
    """
    import numpy as np

    path = Path(directory) / CALLBACK_STATE_FILE
    if not path.is_file():
        return
    state = json.loads(path.read_text())
    weights_path = Path(directory) / BEST_WEIGHTS_FILE
    for name, callback in _stateful(callbacks).items():
        if name not in state:
            continue  # the callback was disabled when the checkpoint was written
        callback.resume_state = dict(state[name])
        if name == "EarlyStopping" and weights_path.is_file():
            with np.load(weights_path) as arrays:
                callback.resume_state["best_weights"] = [
                    arrays[f"arr_{index}"] for index in range(len(arrays.files))
                ]


def configured_callbacks(train: TrainSettings, tensorboard_dir: Path | None) -> list:
    """EarlyStopping, ReduceLROnPlateau and TensorBoard as ``train`` asks.

    Args:
        tensorboard_dir: where this process writes TensorBoard events; ``None`` writes nowhere
            that lasts (non-chief workers: only rank 0 writes; see :func:`_discarding_tensorboard`).
    """
    import tensorflow as tf

    callbacks = []
    if train.early_stopping.enabled:
        callbacks.append(
            _resumable(tf.keras.callbacks.EarlyStopping)(
                monitor=train.early_stopping.monitor,
                patience=train.early_stopping.patience,
                restore_best_weights=True,
            )
        )
    if train.reduce_lr.enabled:
        callbacks.append(
            _resumable(tf.keras.callbacks.ReduceLROnPlateau)(
                monitor=train.reduce_lr.monitor,
                factor=train.reduce_lr.factor,
                patience=train.reduce_lr.patience,
            )
        )
    if tensorboard_dir is None:
        callbacks.append(
            _discarding_tensorboard()(histogram_freq=0, write_graph=False, profile_batch=0)
        )
    else:
        callbacks.append(
            tf.keras.callbacks.TensorBoard(
                log_dir=str(tensorboard_dir), histogram_freq=0, write_graph=True, profile_batch=0
            )
        )
    return callbacks


def _discarding_tensorboard():
    """A TensorBoard callback for a worker whose events nobody reads (``tensorboard_dir=None``:
    every rank but 0), so all ranks run the same callbacks: it writes into a temporary directory
    made when a ``fit`` starts and deleted when it ends (a fine-tuning phase's ``fit`` makes
    another), so callbacks that never fit leave nothing behind."""
    import tensorflow as tf

    class DiscardingTensorBoard(tf.keras.callbacks.TensorBoard):
        def __init__(self, **kwargs):
            super().__init__(log_dir="", **kwargs)  # set_model makes it

        def set_model(self, model):
            if not self.log_dir or not os.path.isdir(self.log_dir):
                self.log_dir = tempfile.mkdtemp(prefix="tb-discard-")
            super().set_model(model)

        def on_train_end(self, logs=None):
            super().on_train_end(logs)
            shutil.rmtree(self.log_dir, ignore_errors=True)

    return DiscardingTensorBoard


def write_run_summaries(tensorboard_dir: Path, config: dict, num_workers: int, model) -> None:
    """The run's resolved config as TensorBoard text (tag ``config``) and the model's forward graph.

    Keras's TensorBoard callback writes no graph under ``MultiWorkerMirroredStrategy`` with a
    ``DatasetCreator`` input (measured), so the inference graph is traced here once, from a clone
    outside the strategy: tracing the distributed model itself on rank 0 alone stalled the other
    workers' collectives.
    """
    import json

    import tensorflow as tf

    text = (
        "```json\n"
        + json.dumps({**config, "num_workers": num_workers}, indent=2, sort_keys=True)
        + "\n```"
    )
    writer = tf.summary.create_file_writer(str(tensorboard_dir))
    clone = tf.keras.models.clone_model(model)
    forward = tf.function(lambda inputs: clone(inputs, training=False))
    graph = forward.get_concrete_function(
        tf.TensorSpec([None, *model.input_shape[1:]], model.inputs[0].dtype)
    ).graph
    with writer.as_default():
        tf.summary.text("config", text, step=0)
        tf.summary.graph(graph)
    writer.close()


def make_progress_callback(total_epochs: int, examples_per_epoch: int, log: bool):
    """One line per epoch with metrics and examples/s; records epoch durations in ``logs``."""

    class EpochProgress(_keras_callback_base()):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self._start
            logs["epoch_seconds"] = seconds
            logs["examples_per_second"] = examples_per_epoch / seconds
            logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())
            if log:
                shown = "  ".join(
                    f"{key} {value:.4f}"
                    for key, value in logs.items()
                    if key not in ("epoch_seconds", "examples_per_second", "learning_rate")
                )
                logger.info(
                    "epoch %d/%d  %s  %.0f examples/s",
                    epoch + 1,
                    total_epochs,
                    shown,
                    logs["examples_per_second"],
                )

    return EpochProgress()


def make_report_callback(report: Callable[[object, dict, int], None]):
    """Call ``report(model, logs, epoch)`` at the end of every epoch (Ray metrics and checkpoints)."""

    class EpochReport(_keras_callback_base()):
        def on_epoch_end(self, epoch, logs=None):
            report(self.model, {key: float(value) for key, value in (logs or {}).items()}, epoch)

    return EpochReport()


class _OneIterator:
    """A dataset whose ``iter()`` returns one iterator, made on first use."""

    def __init__(self, dataset) -> None:
        self._dataset = dataset
        self._iterator = None

    def __iter__(self):
        if self._iterator is None:
            self._iterator = iter(self._dataset)
        return self._iterator

    def __getattr__(self, name: str):
        return getattr(self._dataset, name)


def make_validation_iterator_reuse():
    """Keep ``fit``'s validation iterator from one epoch to the next.

    tf-keras builds a new iterator over the validation data at every epoch's evaluation. Under
    MultiWorkerMirroredStrategy that is a multi-device iterator each time, ~0.1 s of every epoch
    on every worker (2 workers of the MLP on 2 cores: epochs 0.66 -> 0.49-0.56 s,
    docs/benchmarks.md#multi-worker-thread-spinning). Our validation datasets repeat, cut into
    exactly ``validation_steps`` batches per pass without shuffling, so one iterator yields the
    same batches at every evaluation. Before the first evaluation's epoch starts, this wraps the
    handler ``fit`` caches for them (``Model._eval_data_handler``, deleted when ``fit`` ends).
    """

    class ReuseValidationIterator(_keras_callback_base()):
        def on_test_begin(self, logs=None):
            handler = getattr(self.model, "_eval_data_handler", None)
            if handler is not None and not isinstance(handler._dataset, _OneIterator):
                handler._dataset = _OneIterator(handler._dataset)

    return ReuseValidationIterator()
