"""The per-worker training loop Ray Train runs: ``model.fit`` under ``MultiWorkerMirroredStrategy``.

The driver resolves the config once and ships it here as a plain dict (:func:`job_to_dict`);
workers never re-enter Hydra. Every worker takes part in every ``model.save`` (the collective
deadlocks otherwise); only rank 0's copy is reported to Ray and the others are discarded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path

from pipeline.settings import AugmentSettings, ModelSettings, TrainSettings
from pipeline.training.model_io import HISTORY_FILE, MODEL_FILE, load_keras_model, save_model

logger = logging.getLogger(__name__)


@dataclass
class TrainJob:
    """Everything a worker needs, as plain data."""

    processed_dir: str
    tensorboard_dir: str
    seed: int
    model: ModelSettings
    train: TrainSettings  # learning_rate already scaled for the number of workers, if asked
    augment: AugmentSettings
    mixed_precision: bool
    xla: bool


def job_to_dict(job: TrainJob) -> dict:
    """The job as nested plain dicts (safe to ship to any Ray worker)."""
    return dataclasses.asdict(job)


def _from_dict(cls, data):
    hints = typing.get_type_hints(cls)
    return cls(
        **{
            name: _from_dict(hints[name], value) if dataclasses.is_dataclass(hints[name]) else value
            for name, value in data.items()
        }
    )


def job_from_dict(data: dict) -> TrainJob:
    """Inverse of :func:`job_to_dict`."""
    return _from_dict(TrainJob, data)


def _restore_model(resume_dir: Path, strategy, model_settings: ModelSettings, num_classes: int):
    """The checkpointed model (weights and optimizer state) and its history, built under ``strategy``."""
    from pipeline.training.custom import builder_module, import_model_module
    from pipeline.training.fused_adam import fuse_adam
    from pipeline.training.models import build_step_variables, standardized_loss_class

    import_model_module(builder_module(model_settings.builder))  # a user model's custom objects
    standardized_loss_class()  # registers a regression model's loss, which the checkpoint's compile config names
    with strategy.scope():
        model = load_keras_model(Path(resume_dir) / MODEL_FILE, compile=True)
        fuse_adam(model.optimizer)  # the file holds Keras's plain Adam: the same slots
        build_step_variables(model, num_classes)  # the optimizer has its slots; builds the metrics
    history = json.loads((Path(resume_dir) / HISTORY_FILE).read_text())
    return model, history


def _build_model(job: TrainJob, meta: dict, strategy):
    import tensorflow as tf

    from pipeline.training.models import build_model, compile_model, with_output_layer

    num_classes = len(meta["class_names"])
    with strategy.scope():
        model = build_model(
            job.model,
            tuple(meta["input_shape"]),
            num_classes,
            meta.get("embeddings"),
            target=meta.get("target"),
        )  # no classes: regression
        if (
            job.mixed_precision
        ):  # float16 compute, float32 outputs (a float16 softmax loses precision)
            linear = tf.keras.layers.Activation("linear", dtype="float32")
            model = with_output_layer(model, tuple(meta["input_shape"]), linear)
        return compile_model(model, job.model, job.train, num_classes)


def fine_tune_epochs(job: TrainJob) -> int:
    """Epochs of ``model=backbone``'s second phase (0: one phase, as for every other model)."""
    return job.model.fine_tune.epochs if job.model.name == "backbone" else 0


def _enter_fine_tune(model, job: TrainJob, strategy, num_classes: int, world_size: int, resumed):
    """Phase two of ``model=backbone``: unfreeze the backbone from ``fine_tune.unfreeze_from`` on
    (BatchNorm stays frozen) and recompile with ``fine_tune.learning_rate`` (times the workers
    under ``train.scale_lr_with_workers``).

    ``resumed``: ``model`` is a phase-two checkpoint. Its trainability is applied again; when that
    leaves the trainable weights as the checkpoint had them, its optimizer (moments, a rate
    ReduceLROnPlateau lowered) is kept, so the resume continues exactly; otherwise it is rebuilt.
    """
    from pipeline.training.backbone import unfreeze_backbone
    from pipeline.training.models import compile_model

    fine_tune = job.model.fine_tune
    with strategy.scope():
        before = [weight.name for weight in model.trainable_weights]
        unfrozen = unfreeze_backbone(model, fine_tune.unfreeze_from)
        if (
            resumed
            and model.optimizer is not None
            and before == [weight.name for weight in model.trainable_weights]
        ):
            return unfrozen
        scale = world_size if job.train.scale_lr_with_workers else 1
        compile_model(
            model, job.model, job.train, num_classes, learning_rate=fine_tune.learning_rate * scale
        )
    return unfrozen


def _history_recorder(history: dict):
    """Append every epoch's logs to ``history`` (kept across resumes, saved in every checkpoint)."""
    from pipeline.training.callbacks import _keras_callback_base

    class HistoryRecorder(_keras_callback_base()):
        def on_epoch_end(self, epoch, logs=None):
            history.setdefault("epochs", []).append(epoch + 1)
            for key, value in (logs or {}).items():
                history.setdefault(key, []).append(float(value))

    return HistoryRecorder()


def distribution_strategy(world_size: int, workers_on_node: int = 1):
    """MultiWorkerMirroredStrategy for 2+ workers, else TensorFlow's default strategy.

    Workers sharing a node get thread pools that block instead of spinning: each step waits on
    the all-reduce with the others, and spinning threads would burn the cores they need
    (docs/benchmarks.md#multi-worker-thread-spinning). A worker alone on its node keeps spinning,
    which a compute-heavy model needs (MobileNetV2 epochs ~7.5 s spinning, ~10 s without, one
    process on 2 cores). Must be the process's first TensorFlow call when ``world_size > 1``.
    """
    import tensorflow as tf

    from pipeline.env import threads_without_spinning

    if world_size == 1:
        return tf.distribute.get_strategy()
    if workers_on_node > 1:
        threads_without_spinning()
    return tf.distribute.MultiWorkerMirroredStrategy()


def fit_model(
    job: TrainJob,
    rank: int,
    world_size: int,
    report=None,
    resume_dir: Path | None = None,
    workers_on_node: int = 1,
):
    """Build, compile and fit the model for worker ``rank`` of ``world_size``.

    Args:
        report: ``report(model, logs, epoch, history, callbacks)`` called after every epoch (Ray reporting); optional.
        resume_dir: a checkpoint written by :func:`save_model`: training continues after its last
            epoch with its weights, optimizer state, history (and TensorBoard steps) and the
            EarlyStopping/ReduceLROnPlateau counters.
        workers_on_node: this run's workers on this worker's node (Ray's local world size). With
            several, TensorFlow's thread pools block instead of spinning (they share the cores).

    ``model=backbone`` with ``model.fine_tune.epochs > 0`` trains in two phases: epochs
    1..``train.epochs`` as built (a frozen backbone), then, after :func:`_enter_fine_tune`, epochs
    ``train.epochs + 1``..``train.epochs + fine_tune.epochs`` (also after an early stop in phase
    one). The phase comes from the epochs done: a resumed checkpoint with more than
    ``train.epochs`` epochs in its history is in phase two and gets its trainability back before
    training continues; one with fewer finishes phase one first.

    Returns:
        ``(model, history_dict)`` with every epoch, including those before a resume.
    """
    import tensorflow as tf

    from pipeline.env import quiet_tensorflow_loggers
    from pipeline.io import read_json
    from pipeline.training.augment import build_augmenter, write_augmentation_grid
    from pipeline.training.callbacks import (
        configured_callbacks,
        make_progress_callback,
        make_report_callback,
        make_validation_iterator_reuse,
        restore_callback_state,
        write_run_summaries,
    )
    from pipeline.training.inputs import class_weight_table, make_dataset, plan_shards

    quiet_tensorflow_loggers()
    # First TF call of the process: MWMS configures collective ops, which must happen before
    # anything (a Keras layer, e.g. the augmenter) initialises the eager context. A lone worker has
    # nothing to all-reduce: MWMS's distributed iterator and collectives cost it ~40% of the
    # throughput of a small model (bench/train_overhead.py), so it trains under the default strategy.
    strategy = distribution_strategy(world_size, workers_on_node)
    tf.keras.utils.set_random_seed(job.seed)
    tf.config.experimental.enable_op_determinism()
    if job.mixed_precision:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    if job.xla:
        tf.config.optimizer.set_jit("autoclustering")
    meta = read_json(Path(job.processed_dir) / "meta.json")
    train_plan = plan_shards(meta["splits"]["train"], world_size, job.train.batch_size)
    val_plan = plan_shards(meta["splits"]["val"], world_size, job.train.batch_size, split="val")
    augmenter = build_augmenter(
        job.augment,
        job.seed,
        meta["input_shape"],
        [spec["feature"] for spec in meta.get("embeddings") or []],
    )
    class_weights = class_weight_table(meta, job.train.class_weight)
    if rank == 0:
        write_augmentation_grid(
            job.augment,
            job.seed,
            job.processed_dir,
            train_plan.files_per_worker[0],
            job.tensorboard_dir,
        )

    # a single worker keeps tf.data's autotuning; multi-worker runs turn it off (make_dataset)
    autotune = world_size == 1

    def train_fn(context):
        return make_dataset(
            job.processed_dir,
            train_plan.files_per_worker[context.input_pipeline_id],
            train_plan.per_replica_batch_size,
            shuffle_buffer=job.train.shuffle_buffer,
            seed=job.seed + context.input_pipeline_id,
            augmenter=augmenter,
            steps=train_plan.steps_per_epoch,
            class_weights=class_weights,
            autotune=autotune,
        )

    def val_fn(context):
        return make_dataset(
            job.processed_dir,
            val_plan.files_per_worker[context.input_pipeline_id],
            val_plan.per_replica_batch_size,
            steps=val_plan.steps_per_epoch,
            autotune=autotune,
        )

    if resume_dir is not None:
        model, history = _restore_model(resume_dir, strategy, job.model, len(meta["class_names"]))
    else:
        model, history = _build_model(job, meta, strategy), {"epochs": []}
    initial_epoch = history["epochs"][-1] if history.get("epochs") else 0
    if initial_epoch and rank == 0:
        logger.info("Resuming from the checkpoint of epoch %d/%d", initial_epoch, job.train.epochs)
    examples_per_epoch = train_plan.steps_per_epoch * job.train.batch_size
    tensorboard_dir = Path(job.tensorboard_dir) if rank == 0 else None
    second_phase = fine_tune_epochs(job)
    total_epochs = job.train.epochs + second_phase
    # Progress first: it adds examples/s and the learning rate to the logs TensorBoard and the history see.
    callbacks = [
        make_progress_callback(total_epochs, examples_per_epoch, log=rank == 0),
        *configured_callbacks(job.train, tensorboard_dir),
        _history_recorder(history),
        make_validation_iterator_reuse(),
    ]
    if resume_dir is not None:
        restore_callback_state(callbacks, resume_dir)
    if report is not None:
        callbacks.append(
            make_report_callback(
                lambda model_, logs, epoch: report(model_, logs, epoch, history, callbacks)
            )
        )
    if tensorboard_dir is not None and initial_epoch == 0:
        write_run_summaries(tensorboard_dir, job_to_dict(job), world_size, model)
    creator = tf.keras.utils.experimental.DatasetCreator

    def fit(epochs: int, start: int) -> None:
        model.fit(
            creator(train_fn),
            epochs=epochs,
            initial_epoch=start,
            steps_per_epoch=train_plan.steps_per_epoch,
            validation_data=creator(val_fn),
            validation_steps=val_plan.steps_per_epoch,
            callbacks=callbacks,
            verbose=0,
        )

    if initial_epoch < job.train.epochs or not second_phase:
        fit(job.train.epochs, initial_epoch)
    if second_phase:
        resumed = initial_epoch > job.train.epochs
        if not resumed:  # phase two's patience counters start afresh (a fit of its own)
            for callback in callbacks:
                if hasattr(callback, "resume_state"):
                    callback.resume_state = None
        unfrozen = _enter_fine_tune(
            model, job, strategy, len(meta["class_names"]), world_size, resumed
        )
        if rank == 0:
            logger.info(
                "Fine-tuning: %d backbone layers trainable, epochs %d-%d",
                unfrozen,
                job.train.epochs + 1,
                total_epochs,
            )
        fit(total_epochs, max(initial_epoch, job.train.epochs))
    return model, history


def _report_to_ray(
    model,
    metrics: dict,
    rank: int,
    with_checkpoint: bool,
    history: dict | None = None,
    wait: bool = False,
    callbacks=(),
) -> None:
    """Report ``metrics`` to Ray; with a checkpoint, every worker saves and rank 0's copy is kept.

    Per-epoch reports upload in the background (``wait=False``): Ray Train V2's controller polls
    its result queue every 2 s, and a blocking report per epoch would cost that much per epoch.
    Ray deletes rank 0's local copy after the upload; other ranks' copies are discarded here.
    """
    import ray.train

    mode = ray.train.CheckpointUploadMode.SYNC if wait else ray.train.CheckpointUploadMode.ASYNC
    if not with_checkpoint:
        ray.train.report(metrics, checkpoint_upload_mode=mode)
        return
    directory = save_model(
        model, history or {}, Path(tempfile.mkdtemp(prefix="checkpoint-")), callbacks
    )
    if rank == 0:
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(directory),
            checkpoint_upload_mode=mode,
            delete_local_checkpoint_after_upload=True,
        )
    else:
        shutil.rmtree(directory, ignore_errors=True)
        ray.train.report(metrics, checkpoint_upload_mode=mode)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: fit (from the last checkpoint, if any) with per-epoch reports and checkpoints,
    then report the final model."""
    from pipeline.env import configure_process_env

    configure_process_env()
    import os

    import ray
    import ray.train

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    on_node = context.get_local_world_size()
    job = job_from_dict(config)
    # Which node and process each worker runs on (the driver's log shows it; tests kill by this pid).
    logger.info(
        "worker %d/%d on node %s pid %d",
        rank,
        world_size,
        ray.get_runtime_context().get_node_id(),
        os.getpid(),
    )

    def report(model, logs, epoch, history, callbacks):
        checkpoint_now = (epoch + 1) % job.train.checkpoint_every == 0
        _report_to_ray(
            model,
            {**logs, "epoch": epoch + 1},
            rank,
            checkpoint_now,
            history=history,
            callbacks=callbacks,
        )

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        model, history = fit_model(job, rank, world_size, report=report, workers_on_node=on_node)
    else:
        with checkpoint.as_directory() as resume_dir:
            model, history = fit_model(
                job,
                rank,
                world_size,
                report=report,
                resume_dir=Path(resume_dir),
                workers_on_node=on_node,
            )
    final = {key: values[-1] for key, values in history.items() if values}
    _report_to_ray(
        model, {**final, "final": 1}, rank, with_checkpoint=True, history=history, wait=True
    )
