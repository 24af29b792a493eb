"""TensorBoard HParams for a training run: its hyperparameters and final metrics, one session per run.

Written by the driver after training into the run's TensorBoard directory (next to Keras's
``train/`` and ``validation/`` event files), so ``tensorboard --logdir <train.tensorboard_dir>/<sweep>``
shows every trial of a sweep in the HParams tab, comparable by ``final/<metric>``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.settings import PipelineConfig

logger = logging.getLogger(__name__)

FINAL_TAG_PREFIX = "final/"


def hparams_from_settings(config: PipelineConfig) -> dict[str, bool | int | float | str]:
    """The hyperparameters a sweep varies, as the flat scalars HParams accepts (lists become text)."""
    model, train, augment = config.model, config.train, config.augment
    values = {
        "data.name": config.data.name, "seed": config.seed,
        "model.name": model.name, "model.hidden_units": model.hidden_units, "model.filters": model.filters,
        "model.kernel_size": model.kernel_size, "model.activation": model.activation, "model.dropout_rate": model.dropout_rate,
        "model.l2": model.l2, "model.batch_norm": model.batch_norm,
        "train.learning_rate": train.learning_rate, "train.batch_size": train.batch_size, "train.optimizer": train.optimizer,
        "train.epochs": train.epochs, "augment.flip": augment.flip, "augment.rotation": augment.rotation,
        "augment.zoom": augment.zoom, "augment.translation": augment.translation, "cluster.num_workers": config.cluster.num_workers,
    }
    return {key: ",".join(map(str, value)) if isinstance(value, list) else value for key, value in values.items()}


def log_hparams(run_dir: Path, config: PipelineConfig, final_metrics: dict) -> None:
    """Write an HParams session (hyperparameters of ``config``) and ``final/<metric>`` scalars to ``run_dir``.

    Example:
        >>> log_hparams(Path("logs/tensorboard/lr-sweep/trial-3"), config, {"val_loss": 0.21, "epochs": 5})
    """
    from tensorboard.plugins.hparams import api as hp

    from pipeline.env import import_tensorflow

    tf = import_tensorflow()
    step = int(final_metrics.get("epochs", 0))
    writer = tf.summary.create_file_writer(str(run_dir))
    with writer.as_default():
        hp.hparams(hparams_from_settings(config), trial_id=Path(run_dir).name)
        for name, value in final_metrics.items():
            if name != "epochs":
                tf.summary.scalar(f"{FINAL_TAG_PREFIX}{name}", float(value), step=step)
    writer.close()
    logger.info("HParams: %s (final metrics under %s*)", run_dir, FINAL_TAG_PREFIX)


def read_hparams(run_dir: Path) -> tuple[dict, dict[str, float]]:
    """Read back a run's HParams session and ``final/*`` scalars with TensorBoard's own reader.

    Returns:
        ``(hyperparameters, {"final/<metric>": value})``.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata
    from tensorboard.util import tensor_util

    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    start = metadata.parse_session_start_info_plugin_data(content)
    hparams = {key: getattr(value, value.WhichOneof("kind")) for key, value in start.hparams.items()}
    finals = {tag: float(tensor_util.make_ndarray(events.Tensors(tag)[-1].tensor_proto))
              for tag in events.Tags()["tensors"] if tag.startswith(FINAL_TAG_PREFIX)}
    return hparams, finals
