"""TensorBoard HParams for a training run: its hyperparameters and final metrics, one session per run.

Written by the driver after training into the run's TensorBoard directory (next to Keras's
``train/`` and ``validation/`` event files), so ``tensorboard --logdir <train.tensorboard_dir>/<sweep>``
shows every trial of a sweep in the HParams tab, comparable by ``final/<metric>``. The event
file is written with TensorBoard's own protos and record writer, without TensorFlow: the train
stage's driver never imports it (that import cost every run ~5 s before Ray could start).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from pipeline.settings import TrainRequest

logger = logging.getLogger(__name__)

FINAL_TAG_PREFIX = "final/"


def hparams_from_settings(request: TrainRequest) -> dict[str, bool | int | float | str]:
    """The hyperparameters a sweep varies, as the flat scalars HParams accepts (lists become text)."""
    model, train, augment = request.model, request.train, request.augment
    values = {
        "data.name": request.data_name,
        "seed": request.seed,
        "model.name": model.name,
        "model.hidden_units": model.hidden_units,
        "model.filters": model.filters,
        "model.kernel_size": model.kernel_size,
        "model.activation": model.activation,
        "model.dropout_rate": model.dropout_rate,
        "model.l2": model.l2,
        "model.batch_norm": model.batch_norm,
        "train.learning_rate": train.learning_rate,
        "train.batch_size": train.batch_size,
        "train.optimizer": train.optimizer,
        "train.epochs": train.epochs,
        "augment.flip": augment.flip,
        "augment.rotation": augment.rotation,
        "augment.zoom": augment.zoom,
        "augment.translation": augment.translation,
        "cluster.num_workers": request.cluster.num_workers,
    }
    return {
        key: ",".join(map(str, value)) if isinstance(value, list) else value
        for key, value in values.items()
    }


def log_hparams(run_dir: Path, request: TrainRequest, final_metrics: dict) -> None:
    """Write an HParams session (hyperparameters of ``request``) and ``final/<metric>`` scalars to ``run_dir``.

    Example:
        >>> log_hparams(Path("logs/tensorboard/lr-sweep/trial-3"), request, {"val_loss": 0.21, "epochs": 5})
    """
    import numpy as np
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp_summary
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.summary.writer.record_writer import RecordWriter
    from tensorboard.util import tensor_util

    step = int(final_metrics.get("epochs", 0))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = (
        run_dir
        / f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.hparams.v2"
    )
    with open(path, "wb") as stream:
        writer = RecordWriter(stream)

        def write(step: int, **fields) -> None:
            writer.write(
                event_pb2.Event(wall_time=time.time(), step=step, **fields).SerializeToString()
            )

        write(0, file_version="brain.Event:2")
        write(
            0, summary=hp_summary.hparams_pb(hparams_from_settings(request), trial_id=run_dir.name)
        )
        for name, value in final_metrics.items():
            if (
                name != "epochs"
            ):  # what tf.summary.scalar writes: a float32 tensor tagged for the scalars plugin
                tag = f"{FINAL_TAG_PREFIX}{name}"
                write(
                    step,
                    summary=summary_pb2.Summary(
                        value=[
                            summary_pb2.Summary.Value(
                                tag=tag,
                                tensor=tensor_util.make_tensor_proto(np.float32(value)),
                                metadata=scalar_metadata.create_summary_metadata(
                                    display_name=tag, description=""
                                ),
                            )
                        ]
                    ),
                )
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
    hparams = {
        key: getattr(value, value.WhichOneof("kind")) for key, value in start.hparams.items()
    }
    finals = {
        tag: float(tensor_util.make_ndarray(events.Tensors(tag)[-1].tensor_proto))
        for tag in events.Tags()["tensors"]
        if tag.startswith(FINAL_TAG_PREFIX)
    }
    return hparams, finals
