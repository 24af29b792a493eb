"""Train stage: Ray Train's ``TensorflowTrainer`` on a local Ray (or an existing cluster).

Output contract (``paths.models``): ``model.keras`` (tf-keras), ``history.json`` (per-epoch
metrics, learning rate, examples/s) and ``run.json`` (run name, TensorBoard directory, workers).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.inputs import plan_shards
from pipeline.io import atomic_dir, read_json, write_json
from pipeline.settings import AugmentSettings, ClusterSettings, ModelSettings, TrainSettings
from pipeline.worker import HISTORY_FILE, MODEL_FILE, TrainJob, job_to_dict, train_loop_per_worker

logger = logging.getLogger(__name__)


@dataclass
class TrainRequest:
    """The parts of the config the train stage reads."""

    seed: int
    model: ModelSettings
    train: TrainSettings
    augment: AugmentSettings
    cluster: ClusterSettings
    data_name: str


def default_run_name(request: TrainRequest) -> str:
    """``<model>-<data>-<UTC time>``, unless ``train.run_name`` is set."""
    return request.train.run_name or f"{request.model.name}-{request.data_name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def _start_ray(cluster: ClusterSettings):
    """Connect to ``cluster.address`` (or RAY_ADDRESS), else start a local Ray sized for the run."""
    import ray

    from pipeline.env import is_verbose, quiet_native_stderr, worker_env_vars
    from pipeline.ray_logs import install_worker_log_filter

    address = cluster.address or os.environ.get("RAY_ADDRESS")
    common = dict(runtime_env={"env_vars": worker_env_vars()}, log_to_driver=True, include_dashboard=False,
                  logging_level=logging.INFO if is_verbose() else logging.ERROR, configure_logging=True)
    if address:
        try:
            with quiet_native_stderr():  # the C++ core announces its log level on fd 2
                ray.init(address=address, **common)
        except (ConnectionError, RuntimeError) as error:
            raise UserError(f"cluster: cannot connect to Ray at cluster.address={address} ({error}): start the cluster or fix the address") from None
    else:
        cpus = cluster.num_workers * cluster.cpus_per_worker + 1  # +1 for the Train controller
        with quiet_native_stderr():
            ray.init(num_cpus=cpus, num_gpus=0, **common)
    if not is_verbose():
        install_worker_log_filter()


def _fit_on_ray(request: TrainRequest, job: TrainJob, storage_dir: Path, run_name: str):
    import ray.train
    from ray.train.tensorflow import TensorflowTrainer

    from pipeline.env import worker_env_vars

    trainer = TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config=job_to_dict(job),
        scaling_config=ray.train.ScalingConfig(
            num_workers=request.cluster.num_workers, use_gpu=request.cluster.use_gpu,
            resources_per_worker={"CPU": request.cluster.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=str(storage_dir.resolve()),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": worker_env_vars()}),
    )
    return trainer.fit()


def check_train_inputs(request: TrainRequest, processed_dir: Path) -> dict:
    """Validate the shard plan against the data before any worker starts; return ``meta.json``."""
    meta_path = Path(processed_dir) / "meta.json"
    if not meta_path.is_file():
        raise UserError(f"train: {meta_path} is missing: run the preprocess stage first (dvc repro preprocess)")
    meta = read_json(meta_path)
    for split in ("train", "val"):
        plan_shards(meta["splits"][split], request.cluster.num_workers, request.train.batch_size, split=split)
    return meta


def run_train(request: TrainRequest, processed_dir: Path, output_dir: Path, tensorboard_root: Path, storage_dir: Path) -> dict:
    """Train on Ray Train and write the final model and history to ``output_dir``.

    Returns:
        The final epoch's metrics (from ``history.json``).
    """
    import ray

    check_train_inputs(request, processed_dir)
    run_name = default_run_name(request)
    tensorboard_dir = Path(tensorboard_root).resolve() / run_name
    job = TrainJob(processed_dir=str(Path(processed_dir).resolve()), tensorboard_dir=str(tensorboard_dir), seed=request.seed,
                   model=request.model, train=request.train, augment=request.augment)
    logger.info("Training %s for %d epochs on %d Ray worker(s), global batch %d; TensorBoard: %s",
                request.model.name, request.train.epochs, request.cluster.num_workers, request.train.batch_size, tensorboard_dir)
    started_here = not ray.is_initialized()
    if started_here:
        _start_ray(request.cluster)
    try:
        result = _fit_on_ray(request, job, Path(storage_dir), run_name)
    finally:
        if started_here:
            ray.shutdown()
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}") from result.error
    with atomic_dir(Path(output_dir)) as tmp, result.checkpoint.as_directory() as checkpoint_dir:
        for name in (MODEL_FILE, HISTORY_FILE):
            shutil.copy2(Path(checkpoint_dir) / name, tmp / name)
        write_json(tmp / "run.json", {"run_name": run_name, "tensorboard_dir": str(tensorboard_dir), "num_workers": request.cluster.num_workers})
    history = read_json(Path(output_dir) / HISTORY_FILE)
    final = {key: values[-1] for key, values in history.items() if values}
    logger.info("Trained %d epochs: %s", len(history["epochs"]), ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k.endswith(("loss", "accuracy"))))
    return final
