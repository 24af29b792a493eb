"""Typed settings for every stage: the schema ``conf/`` is validated against.

Defaults live only in ``conf/`` (one source of truth): these dataclasses declare names, types and
ranges, never values. ``stages/`` merges the composed Hydra config into :class:`PipelineConfig`
(unknown keys and wrong types fail there) and then calls :func:`validate` for ranges and names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline.errors import UserError


@dataclass
class DataSettings:
    name: str  # source, see pipeline.sources.SOURCES
    path: Optional[str]  # local file for file-backed sources (e.g. mnist.npz)
    cache_dir: Optional[str]  # where Keras's loaders cache downloads


@dataclass
class PreprocessSettings:
    val_fraction: float
    test_fraction: float
    normalize: str  # minmax | standardize | none
    num_shards: int  # train/val shards; at least cluster.num_workers


@dataclass
class ModelSettings:
    name: str  # see pipeline.models.MODEL_BUILDERS
    hidden_units: list[int]
    filters: list[int]
    kernel_size: int
    activation: str
    dropout_rate: float
    l2: float
    batch_norm: bool
    loss: str  # auto picks the loss from the number of classes
    metrics: list[str]


@dataclass
class EarlyStoppingSettings:
    enabled: bool
    monitor: str
    patience: int


@dataclass
class ReduceLROnPlateauSettings:
    enabled: bool
    monitor: str
    factor: float
    patience: int


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int  # global: split over all replicas
    learning_rate: float
    optimizer: str
    shuffle_buffer: int
    early_stopping: EarlyStoppingSettings
    reduce_lr: ReduceLROnPlateauSettings
    checkpoint_every: int  # epochs between Ray checkpoints
    tensorboard_dir: str
    run_name: Optional[str]


@dataclass
class AugmentSettings:
    flip: str  # none | horizontal | vertical | horizontal_and_vertical
    rotation: float  # fraction of a full turn
    zoom: float
    translation: float  # fraction of height/width


@dataclass
class ClusterSettings:
    address: Optional[str]  # None: start a local Ray for the run
    num_workers: int
    cpus_per_worker: int
    use_gpu: bool
    storage_dir: str  # Ray results and checkpoints (logs only; DVC owns models/)


@dataclass
class EvaluateSettings:
    batch_size: int


@dataclass
class ExportSettings:
    saved_model: bool
    tflite: bool
    tfjs: bool
    tolerance: float  # max abs difference from the trained model
    num_check_inputs: int


@dataclass
class PathSettings:
    raw: str
    processed: str
    models: str
    reports: str
    exports: str


@dataclass
class SweepSettings:
    name: str  # multirun trials write under <dir>/<name>/<trial number>/
    dir: str
    objective: str  # final-epoch metric a sweep trial returns, see pipeline.sweep.available_objectives
    direction: str  # minimize | maximize


@dataclass
class PipelineConfig:
    seed: int
    data: DataSettings
    preprocess: PreprocessSettings
    model: ModelSettings
    train: TrainSettings
    augment: AugmentSettings
    cluster: ClusterSettings
    evaluate: EvaluateSettings
    export: ExportSettings
    paths: PathSettings
    sweep: SweepSettings


NORMALIZERS = ("minmax", "standardize", "none")
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adagrad")
FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")
LOSSES = ("auto", "sparse_categorical_crossentropy", "binary_crossentropy")
METRICS = ("accuracy", "auc", "precision", "recall")


def _require(ok: bool, key: str, received: object, expected: str) -> None:
    if not ok:
        raise UserError(f"config: {key}={received!r} is invalid: expected {expected}; fix it in conf/ or override {key}=...")


def _one_of(key: str, value: str, valid: tuple[str, ...] | list[str]) -> None:
    _require(value in valid, key, value, f"one of {', '.join(valid)}")


def validate(config: PipelineConfig) -> PipelineConfig:
    """Check ranges and names that types alone cannot express.

    Raises:
        UserError: naming the key, the value received and what is expected.
    """
    from pipeline.models import MODEL_BUILDERS
    from pipeline.sources import SOURCES

    _one_of("data.name", config.data.name, sorted(SOURCES))
    _one_of("model.name", config.model.name, sorted(MODEL_BUILDERS))
    pre, train, cluster = config.preprocess, config.train, config.cluster
    _require(0 < pre.test_fraction < 1, "preprocess.test_fraction", pre.test_fraction, "a fraction in (0, 1)")
    _require(0 < pre.val_fraction < 1, "preprocess.val_fraction", pre.val_fraction, "a fraction in (0, 1)")
    _require(pre.val_fraction + pre.test_fraction < 1, "preprocess.val_fraction", pre.val_fraction,
             f"val_fraction + test_fraction < 1 (test_fraction={pre.test_fraction})")
    _one_of("preprocess.normalize", pre.normalize, NORMALIZERS)
    _require(pre.num_shards >= 1, "preprocess.num_shards", pre.num_shards, "an integer >= 1")
    _require(train.epochs > 0, "train.epochs", train.epochs, "an integer > 0")
    _require(train.batch_size > 0, "train.batch_size", train.batch_size, "an integer > 0")
    _require(train.learning_rate > 0, "train.learning_rate", train.learning_rate, "a number > 0")
    _one_of("train.optimizer", train.optimizer, OPTIMIZERS)
    _require(train.shuffle_buffer >= 1, "train.shuffle_buffer", train.shuffle_buffer, "an integer >= 1")
    _require(train.checkpoint_every >= 1, "train.checkpoint_every", train.checkpoint_every, "an integer >= 1")
    _require(0 <= config.model.dropout_rate < 1, "model.dropout_rate", config.model.dropout_rate, "a rate in [0, 1)")
    _require(config.model.l2 >= 0, "model.l2", config.model.l2, "a number >= 0")
    _one_of("model.loss", config.model.loss, LOSSES)
    for metric in config.model.metrics:
        _one_of("model.metrics", metric, METRICS)
    _one_of("augment.flip", config.augment.flip, FLIP_MODES)
    _require(cluster.num_workers >= 1, "cluster.num_workers", cluster.num_workers, "an integer >= 1")
    _require(cluster.cpus_per_worker >= 1, "cluster.cpus_per_worker", cluster.cpus_per_worker, "an integer >= 1")
    _require(train.batch_size % cluster.num_workers == 0, "train.batch_size", train.batch_size,
             f"a global batch divisible by cluster.num_workers={cluster.num_workers}")
    _require(pre.num_shards >= cluster.num_workers, "preprocess.num_shards", pre.num_shards,
             f"at least cluster.num_workers={cluster.num_workers} shards so every worker reads data")
    _require(config.export.tolerance > 0, "export.tolerance", config.export.tolerance, "a number > 0")
    _require(config.export.num_check_inputs >= 1, "export.num_check_inputs", config.export.num_check_inputs, "an integer >= 1")
    _require(config.evaluate.batch_size > 0, "evaluate.batch_size", config.evaluate.batch_size, "an integer > 0")
    from pipeline.sweep import DIRECTIONS, available_objectives

    sweep = config.sweep
    _require(bool(sweep.name) and "/" not in sweep.name and sweep.name not in (".", ".."), "sweep.name", sweep.name,
             "a plain directory name (no '/')")
    _one_of("sweep.direction", sweep.direction, DIRECTIONS)
    _one_of("sweep.objective", sweep.objective, available_objectives(config.model.metrics))
    return config
