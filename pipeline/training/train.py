"""Train stage: one local worker in a child process (:mod:`pipeline.training.local`), or Ray Train's
data-parallel trainer with a TensorFlow backend on a local Ray or an existing cluster (:func:`uses_ray`).

The driver never imports TensorFlow (see :mod:`pipeline.training.ray_backend`); only the workers do.

Output contract (``paths.models``): ``model.keras`` (tf-keras), ``history.json`` (per-epoch
metrics, learning rate, examples/s), ``run.json`` (run name, TensorBoard directory, workers) and
the training curves as DVC plots (:func:`write_training_curves`): ``curves/<metric>.csv``
(``epoch,train,validation``: loss, accuracy or a regression model's mae/rmse, whatever was
compiled) and ``learning_rate.csv`` (``epoch,learning_rate``); ``dvc.yaml`` declares both.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import re
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

from pipeline.errors import UserError
from pipeline.io import atomic_dir, read_json, write_json
from pipeline.settings import ClusterSettings, TrainRequest, TrainSettings
from pipeline.training.check import check_model_in_child
from pipeline.training.cluster import resolve_address
from pipeline.training.custom import builder_module
from pipeline.training.inputs import class_weight_table, plan_shards
from pipeline.training.local import fit_locally, latest_checkpoint
from pipeline.training.model_io import (
    CURVES_DIR,
    HISTORY_FILE,
    LEARNING_RATE_FILE,
    MODEL_FILE,
)
from pipeline.training.worker import TrainJob, job_to_dict, train_loop_per_worker

logger = logging.getLogger(__name__)

SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # ray.train.v2._internal.constants.CHECKPOINT_MANAGER_SNAPSHOT_FILENAME
RUN_STATE_FILE = "pipeline_run.json"
# Models the train stage checks before any worker starts (kp-check-model): a user's builder, and a
# backbone whose weights (an offline imagenet download, a mismatching file) may fail to load.
CHECKED_MODELS = ("custom", "backbone")
SET_ASIDE_KEPT = (
    3  # finished or replaced runs kept in cluster.storage_dir (their logs); older ones are deleted
)
SET_ASIDE_SUFFIX = re.compile(r"\.(\d{8}-\d{6})$")


def _config_digest(request: TrainRequest, meta: dict) -> str:
    """8 hex digits over what determines the trained model (not where or on how many workers it runs)."""
    train = dataclasses.asdict(request.train)
    for key in ("tensorboard_dir", "run_name", "keep_checkpoints", "max_failures", "resume"):
        train.pop(key)
    identity = {
        "seed": request.seed,
        "data": request.data_name,
        "meta": meta,
        "train": train,
        "model": dataclasses.asdict(request.model),
        "augment": dataclasses.asdict(request.augment),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[
        :8
    ]


def default_run_name(request: TrainRequest, meta: dict) -> str:
    """``<model>-<data>-<config digest>``, unless ``train.run_name`` is set.

    Stable across reruns of the same config and data, so a rerun finds the previous run's Ray
    checkpoints (same ``storage_path`` and ``RunConfig.name``) and its TensorBoard directory.
    """
    return (
        request.train.run_name
        or f"{request.model.name}-{request.data_name}-{_config_digest(request, meta)}"
    )


def scaled_train_settings(train: TrainSettings, num_workers: int) -> TrainSettings:
    """``train`` with the learning rate multiplied by ``num_workers`` if ``train.scale_lr_with_workers``."""
    if not train.scale_lr_with_workers:
        return train
    return dataclasses.replace(train, learning_rate=train.learning_rate * num_workers)


def train_job(request: TrainRequest, processed_dir: Path, tensorboard_dir: Path) -> TrainJob:
    """What every worker of the run trains: the request's settings, the learning rate scaled for
    ``cluster.num_workers`` if asked, the cluster's mixed precision and XLA switches."""
    return TrainJob(
        processed_dir=str(Path(processed_dir).resolve()),
        tensorboard_dir=str(tensorboard_dir),
        seed=request.seed,
        model=request.model,
        train=scaled_train_settings(request.train, request.cluster.num_workers),
        augment=request.augment,
        mixed_precision=request.cluster.mixed_precision,
        xla=request.cluster.xla,
    )


def _storage_fs(storage: str):
    """``(pyarrow filesystem, path)`` for a local directory or a URI such as ``s3://bucket/runs``."""
    import pyarrow.fs

    if "://" in storage:
        return pyarrow.fs.FileSystem.from_uri(storage)
    return pyarrow.fs.LocalFileSystem(), str(Path(storage).resolve())


def uses_ray(cluster: ClusterSettings, storage: str) -> bool:
    """Whether the run trains on Ray Train; otherwise one local worker trains without Ray
    (:mod:`pipeline.training.local`: same checkpoints, resume and restarts, ~15 s less start-up).

    Ray when ``cluster.launcher=ray``, more than one worker, a cluster to join (``cluster.address``
    or ``RAY_ADDRESS``, which ``ray job submit`` sets), a remote ``cluster.storage_dir``
    (``s3://...``), or when this process already runs on Ray (a trial of the Ray trials launcher).
    """
    if (
        cluster.launcher == "ray"
        or cluster.num_workers > 1
        or resolve_address(cluster)
        or "://" in storage
    ):
        return True
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def resumable_run(storage: str, run_name: str, on_ray: bool = True) -> tuple[int, str | None]:
    """The epoch of the last checkpoint recorded for ``run_name`` (0: none) and the TensorBoard
    directory that run writes to (``None`` if unknown).

    Ray Train V2 restores a run from ``<storage>/<name>/checkpoint_manager_snapshot.json``
    when a trainer with the same ``storage_path`` and ``RunConfig.name`` starts; the workers then
    get that checkpoint from ``ray.train.get_checkpoint()``. A local run (``on_ray=False``) records
    its own in ``<storage>/<name>/local_checkpoints.json``. Each resumes only its own kind: a
    run directory the other kind left is set aside and the run starts afresh.
    """
    fs, root = _storage_fs(storage)
    if on_ray:
        try:
            with fs.open_input_stream(f"{root}/{run_name}/{SNAPSHOT_FILE}") as stream:
                latest = json.loads(stream.read()).get("latest_checkpoint_result")
        except (FileNotFoundError, OSError, ValueError):
            return 0, None
        epoch = int(latest["metrics"].get("epoch", 0)) if latest else 0
    else:
        epoch = latest_checkpoint(Path(root) / run_name)[0]
        if not epoch:
            return 0, None
    try:
        with fs.open_input_stream(f"{root}/{run_name}/{RUN_STATE_FILE}") as stream:
            tensorboard_dir = json.loads(stream.read())["tensorboard_dir"]
    except (FileNotFoundError, OSError, ValueError, KeyError):
        tensorboard_dir = None
    return epoch, tensorboard_dir


def _record_run_state(storage: str, run_name: str, state: dict) -> None:
    """What a resumed run must reuse (its TensorBoard directory), next to Ray's own run state."""
    fs, root = _storage_fs(storage)
    fs.create_dir(f"{root}/{run_name}", recursive=True)
    with fs.open_output_stream(f"{root}/{run_name}/{RUN_STATE_FILE}") as stream:
        stream.write(json.dumps(state).encode())


def plan_run(
    request: TrainRequest, meta: dict, storage: str, tensorboard_root: Path
) -> tuple[str, int, Path]:
    """``(run name, epoch to resume after (0: start afresh), TensorBoard directory)``.

    A fresh run gets its own TensorBoard directory ``<run name>-<UTC time>``; a resumed run
    continues in the one its first attempt recorded, so the epoch steps carry on.
    """
    run_name = default_run_name(request, meta)
    resume_epoch, resume_tensorboard = (
        resumable_run(storage, run_name, uses_ray(request.cluster, storage))
        if request.train.resume
        else (0, None)
    )
    if resume_epoch and resume_tensorboard:
        return run_name, resume_epoch, Path(resume_tensorboard)
    return (
        run_name,
        resume_epoch,
        Path(tensorboard_root).resolve()
        / f"{run_name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}",
    )


def _set_aside(fs, path: str) -> None:
    """Rename ``path`` to ``path.<UTC time>`` if it exists (keeps old logs, frees the name), then
    delete all but the :data:`SET_ASIDE_KEPT` newest set-aside runs next to it."""
    import pyarrow.fs

    if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        fs.move(path, f"{path}.{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    prune_set_aside(fs, path.rpartition("/")[0])


def prune_set_aside(fs, root: str, keep: int = SET_ASIDE_KEPT) -> list[str]:
    """Delete all but the ``keep`` newest set-aside run directories (``<run name>.<UTC time>``) under
    ``root``, whatever their run name; runs in progress (no time suffix) are never touched.

    Returns:
        The deleted paths.
    """
    import pyarrow.fs

    entries = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    aside = [
        (match.group(1), entry.path)
        for entry in entries
        if entry.type == pyarrow.fs.FileType.Directory
        and (match := SET_ASIDE_SUFFIX.search(entry.base_name))
    ]
    deleted = [path for _, path in sorted(aside, reverse=True)[keep:]]
    for path in deleted:
        try:
            fs.delete_dir(path)
        except OSError:  # a concurrent run (a sweep's trials share the storage) deleted it first
            pass
    return deleted


def _fit_on_ray(request: TrainRequest, job: TrainJob, storage: str, run_name: str):
    import ray.train
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from pipeline.env import worker_env_vars
    from pipeline.training.ray_backend import TFConfigBackend

    cluster = request.cluster
    trainer = DataParallelTrainer(  # Ray's TensorflowTrainer with a backend that leaves TensorFlow to the workers
        train_loop_per_worker,
        train_loop_config=job_to_dict(job),
        backend_config=TFConfigBackend(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cluster.num_workers,
            use_gpu=cluster.use_gpu,
            placement_strategy=cluster.placement_strategy,
            resources_per_worker={"CPU": cluster.cpus_per_worker, **cluster.resources_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=request.train.keep_checkpoints
            ),
            failure_config=ray.train.FailureConfig(max_failures=request.train.max_failures),
            worker_runtime_env={"env_vars": worker_env_vars()},
        ),
    )
    return trainer.fit()


def user_package(builder: str | None) -> Path | None:
    """The local folder of the builder's top-level package (e.g. ``./user_models``), if it is one:
    Ray ships it to every worker of the job (``py_modules``), so a builder resolves on every node.

    A builder in an installed package (site-packages) reaches the workers the way the package was
    installed; only a folder of this checkout needs shipping.
    """
    import importlib.util

    module = builder_module(builder)
    if not module:
        return None
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))).resolve()
    return None if "site-packages" in folder.parts else folder


def check_train_inputs(request: TrainRequest, processed_dir: Path) -> dict:
    """Validate the shard plan against the data before any worker starts; return ``meta.json``."""
    meta_path = Path(processed_dir) / "meta.json"
    if not meta_path.is_file():
        raise UserError(
            f"train: {meta_path} is missing: run the preprocess stage first (dvc repro preprocess)"
        )
    meta = read_json(meta_path)
    for split in ("train", "val"):
        plan_shards(
            meta["splits"][split],
            request.cluster.num_workers,
            request.train.batch_size,
            split=split,
        )
    class_weight_table(
        meta, request.train.class_weight
    )  # balanced weights for a regression target: one line here, not in a worker
    return meta


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_training_curves(history: dict, directory: Path) -> list[str]:
    """Per-epoch curves from ``history.json`` as the CSVs ``dvc plots`` draws; returns the metrics written.

    Every metric compiled with a validation twin (``loss``/``val_loss``, ``accuracy``/``val_accuracy``,
    a regression model's ``mae``/``val_mae``...) gets ``curves/<metric>.csv`` with the columns
    ``epoch,train,validation``: one file per plot, the same two lines for every task, so ``dvc.yaml``
    names no task-specific field. The learning rate goes to ``learning_rate.csv``.
    """
    directory = Path(directory)
    epochs = history.get("epochs", [])
    metrics = [key for key in history if f"val_{key}" in history and key != "epochs"]
    (directory / CURVES_DIR).mkdir(parents=True, exist_ok=True)
    for metric in metrics:
        _write_csv(
            directory / CURVES_DIR / f"{metric}.csv",
            ["epoch", "train", "validation"],
            zip(epochs, history[metric], history[f"val_{metric}"], strict=False),
        )
    _write_csv(
        directory / LEARNING_RATE_FILE,
        ["epoch", "learning_rate"],
        zip(epochs, history.get("learning_rate", []), strict=False),
    )
    return metrics


def _start_run(
    fs, storage: str, run_name: str, resume_epoch: int, tensorboard_dir: Path, request, job, where
) -> None:
    """Log what the run does; a fresh run sets aside a stale run directory of its name first."""
    if resume_epoch:
        logger.info(
            "Resuming run %s from its checkpoint of epoch %d (train.resume=false starts over)",
            run_name,
            resume_epoch,
        )
    else:
        _set_aside(
            fs, f"{_storage_fs(storage)[1]}/{run_name}"
        )  # a stale or unwanted run of this name
        _record_run_state(storage, run_name, {"tensorboard_dir": str(tensorboard_dir)})
    logger.info(
        "Training %s for %d epochs on %s, global batch %d (%d per worker), learning rate %g; TensorBoard: %s",
        request.model.name,
        request.train.epochs,
        where,
        request.train.batch_size,
        request.train.batch_size // request.cluster.num_workers,
        job.train.learning_rate,
        tensorboard_dir,
    )


@contextmanager
def _trained_on_ray(
    request: TrainRequest,
    job: TrainJob,
    storage: str,
    processed_dir: Path,
    plan: tuple[str, int, Path],
) -> Iterator[Path]:
    """Start (or join) Ray, check the model while it starts, train; yield the final checkpoint's directory."""
    import ray

    # Ray Train's trainer module (which pulls in ray.util.state and ray.autoscaler) is imported here,
    # before ray.init starts Ray's driver threads: imported after, it once met one of those threads
    # importing ray.autoscaler at the same moment ("cannot import name 'DictCount' from partially
    # initialized module ray.autoscaler._private.util", the driver-kill test, 1 suite run in 4).
    import ray.train.v2.api.data_parallel_trainer  # noqa: F401

    from pipeline.training.cluster import check_cluster_capacity, start_ray

    run_name, resume_epoch, tensorboard_dir = plan
    started_here = not ray.is_initialized()
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The model check (a child process importing TensorFlow) overlaps Ray's start; no worker
        # starts before it passes.
        model_check = (
            pool.submit(
                check_model_in_child,
                request.model,
                request.train,
                processed_dir,
                request.allow_select_tf_ops,
                request.tfjs,
            )
            if request.model.name in CHECKED_MODELS
            else None
        )
        if started_here:
            package = user_package(request.model.builder)
            start_ray(request.cluster, py_modules=[str(package)] if package else [])
        try:
            if model_check is not None:
                model_check.result()  # the check's UserError, before any worker starts
        except BaseException:
            if started_here:
                ray.shutdown()
            raise
    try:
        check_cluster_capacity(request.cluster)
        _start_run(
            _storage_fs(storage)[0],
            storage,
            run_name,
            resume_epoch,
            tensorboard_dir,
            request,
            job,
            f"{request.cluster.num_workers} Ray worker(s)",
        )
        result = _fit_on_ray(request, job, storage, run_name)
    finally:
        if started_here:
            ray.shutdown()
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}") from result.error
    with result.checkpoint.as_directory() as checkpoint_dir:
        yield Path(checkpoint_dir)


def _trained_locally(
    request: TrainRequest, job: TrainJob, storage: str, plan: tuple[str, int, Path]
) -> Path:
    """Train one worker in a child process (:mod:`pipeline.training.local`); return the final model's directory."""
    run_name, resume_epoch, tensorboard_dir = plan
    fs, root = _storage_fs(storage)
    check = (
        {"allow_select_tf_ops": request.allow_select_tf_ops, "tfjs": request.tfjs}
        if request.model.name in CHECKED_MODELS
        else None
    )
    return fit_locally(
        job,
        Path(root) / run_name,
        request.train.max_failures,
        check=check,
        use_gpu=request.cluster.use_gpu,
        on_ready=lambda: _start_run(  # after the model check: nothing is written before it passes
            fs, storage, run_name, resume_epoch, tensorboard_dir, request, job, "1 local worker"
        ),
    )


def run_train(
    request: TrainRequest,
    processed_dir: Path,
    output_dir: Path,
    tensorboard_root: Path,
    storage_dir: str | Path,
) -> dict:
    """Train and write the final model and history to ``output_dir``.

    One worker on this machine trains in a child process without Ray; more workers, or a cluster,
    on Ray Train (:func:`uses_ray`). A run whose stage process died continues from its last
    checkpoint when rerun with the same config and ``storage_dir`` (unless ``train.resume`` is
    false); a finished run's directory is set aside so the next run of the same config starts afresh.

    Also checks the Keras flavour first (without importing TensorFlow: only the workers do) and
    logs the run's hyperparameters and final metrics as TensorBoard HParams at the end.

    Returns:
        The final epoch's metrics (from ``history.json``).
    """
    from pipeline.env import preflight
    from pipeline.training.hparams import log_hparams

    preflight(import_tf=False)
    meta = check_train_inputs(request, processed_dir)
    storage = str(storage_dir) if "://" in str(storage_dir) else str(Path(storage_dir).resolve())
    on_ray = uses_ray(request.cluster, storage)
    plan = plan_run(request, meta, storage, Path(tensorboard_root))
    run_name, resume_epoch, tensorboard_dir = plan
    fs, storage_root = _storage_fs(storage)
    job = train_job(request, processed_dir, tensorboard_dir)
    with (
        (
            _trained_on_ray(request, job, storage, processed_dir, plan)
            if on_ray
            else nullcontext(_trained_locally(request, job, storage, plan))
        ) as checkpoint_dir,
        atomic_dir(Path(output_dir)) as tmp,
    ):
        for name in (MODEL_FILE, HISTORY_FILE):
            shutil.copy2(Path(checkpoint_dir) / name, tmp / name)
        write_json(
            tmp / "run.json",
            {
                "run_name": run_name,
                "tensorboard_dir": str(tensorboard_dir),
                "num_workers": request.cluster.num_workers,
                "launcher": "ray" if on_ray else "local",
                "resumed_from_epoch": resume_epoch,
                "model_module": builder_module(request.model.builder),  # imported before loading
            },
        )
        write_training_curves(read_json(tmp / HISTORY_FILE), tmp)
    _set_aside(
        fs, f"{storage_root}/{run_name}"
    )  # finished: the next run of this config starts afresh
    history = read_json(Path(output_dir) / HISTORY_FILE)
    final = {key: values[-1] for key, values in history.items() if values}
    logger.info(
        "Trained %d epochs: %s",
        len(history["epochs"]),
        ", ".join(
            f"{k} {v:.4f}" for k, v in final.items() if k.endswith(("loss", "accuracy", "mae"))
        ),
    )
    log_hparams(Path(tensorboard_dir), request, final)
    return final
