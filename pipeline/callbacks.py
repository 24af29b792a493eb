"""Keras callbacks for a training run: those from config plus progress and Ray reporting."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Callable

from pipeline.settings import TrainSettings

logger = logging.getLogger(__name__)


def _keras_callback_base():
    import tensorflow as tf

    return tf.keras.callbacks.Callback


def configured_callbacks(train: TrainSettings, tensorboard_dir: Path | None) -> list:
    """EarlyStopping, ReduceLROnPlateau and TensorBoard as ``train`` asks.

    Args:
        tensorboard_dir: where this process writes TensorBoard events; ``None`` writes nowhere
            (non-chief workers: only rank 0 writes).
    """
    import tensorflow as tf

    callbacks = []
    if train.early_stopping.enabled:
        callbacks.append(tf.keras.callbacks.EarlyStopping(
            monitor=train.early_stopping.monitor, patience=train.early_stopping.patience, restore_best_weights=True))
    if train.reduce_lr.enabled:
        callbacks.append(tf.keras.callbacks.ReduceLROnPlateau(
            monitor=train.reduce_lr.monitor, factor=train.reduce_lr.factor, patience=train.reduce_lr.patience))
    log_dir = str(tensorboard_dir) if tensorboard_dir is not None else tempfile.mkdtemp(prefix="tb-discard-")
    callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=0, write_graph=tensorboard_dir is not None, profile_batch=0))
    return callbacks


def write_run_summaries(tensorboard_dir: Path, config: dict, num_workers: int, model) -> None:
    """The run's resolved config as TensorBoard text (tag ``config``) and the model's forward graph.

    Keras's TensorBoard callback writes no graph under ``MultiWorkerMirroredStrategy`` with a
    ``DatasetCreator`` input (measured), so the inference graph is traced here once, from a clone
    outside the strategy: tracing the distributed model itself on rank 0 alone stalled the other
    workers' collectives.
    """
    import json

    import tensorflow as tf

    text = "```json\n" + json.dumps({**config, "num_workers": num_workers}, indent=2, sort_keys=True) + "\n```"
    writer = tf.summary.create_file_writer(str(tensorboard_dir))
    clone = tf.keras.models.clone_model(model)
    forward = tf.function(lambda inputs: clone(inputs, training=False))
    graph = forward.get_concrete_function(tf.TensorSpec([None, *model.input_shape[1:]], model.inputs[0].dtype)).graph
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
                shown = "  ".join(f"{key} {value:.4f}" for key, value in logs.items()
                                  if key not in ("epoch_seconds", "examples_per_second", "learning_rate"))
                logger.info("epoch %d/%d  %s  %.0f examples/s", epoch + 1, total_epochs, shown, logs["examples_per_second"])

    return EpochProgress()


def make_report_callback(report: Callable[[object, dict, int], None]):
    """Call ``report(model, logs, epoch)`` at the end of every epoch (Ray metrics and checkpoints)."""

    class EpochReport(_keras_callback_base()):
        def on_epoch_end(self, epoch, logs=None):
            report(self.model, {key: float(value) for key, value in (logs or {}).items()}, epoch)

    return EpochReport()
