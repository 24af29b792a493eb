"""Typed settings for every stage: the schema ``conf/`` is validated against.

Defaults live only in ``conf/`` (one source of truth): these dataclasses declare names, types and
ranges, never values. ``stages/`` merges the composed Hydra config into :class:`PipelineConfig`
(unknown keys and wrong types fail there) and then calls :func:`validate` for ranges and names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import UserError


@dataclass
class DataSettings:
    name: str  # source, see pipeline.data.sources.SOURCES
    path: (
        str | None
    )  # local file or folder for file-backed sources (mnist.npz, IDX folder, CSV, image folder)
    cache_dir: str | None  # where Keras's loaders cache downloads
    image_size: list[int] | None  # image_folder: [height, width] to resize to; None keeps sizes
    channels: int | None  # image_folder: 1 | 3; None keeps the first image's
    header: bool  # csv: first row holds column names
    column_names: (
        list[str] | None
    )  # csv: names for every column (headerless files); None = column_0, column_1, ...
    label_column: str | None  # csv: name, or index (-1 = last); None = last column
    missing: str  # csv: drop | mean | median | most_frequent
    schema: str | None  # stored schema.json to validate the new data against
    on_anomaly: str  # fail | warn
    on_bad_record: str  # fail | skip
    label_mode: str  # cifar100: fine (100 classes) | coarse (20 superclasses)
    categorical: str  # csv: text columns onehot | embedding (one integer code per column, embedded in the model)
    task: str  # classification | regression (csv, npz: a numeric target, linear output, MSE/MAE metrics)


@dataclass
class PreprocessSettings:
    val_fraction: float
    test_fraction: float
    normalize: str  # minmax | standardize | none
    num_shards: int  # train/val shards; at least cluster.num_workers
    test_split: str  # auto: stratified by test_fraction | source: the source's own test split (raw split.npy)


@dataclass
class FineTuneSettings:
    """model=backbone's second phase: unfreeze (part of) the backbone and train on at a low rate."""

    epochs: int = 0  # epochs after train.epochs with the backbone unfrozen; 0 = no second phase
    # where the unfreezing starts: a backbone layer's name, or a fraction of its layers (0.7 = the
    # last 30%); null = the whole backbone. BatchNormalization layers always stay frozen.
    unfreeze_from: str | float | None = None
    learning_rate: float | None = None  # the second phase's rate (conf/model/backbone.yaml: 1e-5)


@dataclass
class ModelSettings:
    name: str  # see pipeline.training.models.MODEL_BUILDERS
    hidden_units: list[int]
    filters: list[int]
    kernel_size: int
    activation: str
    dropout_rate: float
    l2: float
    batch_norm: bool
    loss: str  # auto picks the loss from the number of classes
    embedding_dim: int  # embedded categoricals (data.categorical=embedding): vector size; 0 = min(50, (categories + 1) // 2)
    metrics: list[str]
    # model=custom: a user's builder "<module>:<function>" (build(input_shape, num_classes, **params)
    # -> uncompiled tf.keras.Model) and its keyword arguments
    builder: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # model=backbone (transfer learning from tf.keras.applications; docs/models.md). The defaults
    # are neutral so the other model files need none of these keys; conf/model/backbone.yaml sets
    # the real ones.
    backbone: str | None = None  # a BACKBONE_MIN_SIZES name, e.g. MobileNetV2
    weights: str | None = None  # imagenet | a local weights file | null (random initialisation)
    input_size: list[int] | None = None  # [height, width] the backbone sees (inputs are resized)
    freeze: bool = True  # backbone frozen (and its BatchNorm in inference mode) in phase one
    fine_tune: FineTuneSettings = field(default_factory=FineTuneSettings)


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
    run_name: str | None
    class_weight: str  # none | balanced (n / (classes * count), from the train split)
    keep_checkpoints: int  # Ray checkpoints kept in cluster.storage_dir
    max_failures: int  # worker-group restarts from the last checkpoint within a run
    resume: bool  # a rerun of the same config continues from its last checkpoint
    scale_lr_with_workers: bool  # learning rate x num_workers (linear scaling rule)
    # batches per compiled call (Keras compile(steps_per_execution=...)); auto: by the model's size
    steps_per_execution: int | str


@dataclass
class AugmentSettings:
    flip: str  # none | horizontal | vertical | horizontal_and_vertical
    rotation: float  # fraction of a full turn
    zoom: float
    translation: float  # fraction of height/width
    contrast: float  # RandomContrast factor
    noise: float  # GaussianNoise stddev, in normalised units (also for tables)


@dataclass
class ClusterSettings:
    # auto: one local worker (no address) trains in a child process without Ray; ray: Ray Train always
    launcher: str
    address: str | None  # None: start a local Ray for the run
    num_workers: int
    cpus_per_worker: int
    use_gpu: bool
    storage_dir: str  # Ray results and checkpoints (logs only; DVC owns models/)
    connect_timeout: float  # seconds to reach cluster.address before giving up
    placement_strategy: str  # PACK | SPREAD | STRICT_PACK | STRICT_SPREAD
    resources_per_worker: dict[str, float]  # extra (custom) Ray resources per worker
    mixed_precision: bool  # mixed_float16 compute (fast on GPUs; runs, slowly, on CPUs)
    xla: bool  # XLA auto-clustering


@dataclass
class EvaluateSettings:
    batch_size: int  # inference batch for the test metrics


@dataclass
class GateSettings:
    min_accuracy: float  # the model is blessed only at or above this test accuracy
    max_loss: float | None  # None = no loss threshold
    baseline: str | None  # a metrics.json path or git:<rev>; None = no relative check
    max_accuracy_regression: float  # allowed accuracy loss vs the baseline
    max_mae: (
        float | None
    )  # regression: bless only at or below this test MAE; None = no MAE threshold
    min_r2: (
        float | None
    )  # regression: bless only at or above this test R^2; None = no R^2 threshold
    max_error_increase: (
        float  # regression: allowed relative MAE/RMSE increase vs the baseline (0.1 = 10%)
    )


# Keys the gate took over from ``evaluate:``: an old config naming one gets one line with its new name.
MOVED_KEYS = {
    f"evaluate.{key}": f"gate.{key}"
    for key in (
        "min_accuracy",
        "max_loss",
        "baseline",
        "max_accuracy_regression",
        "max_mae",
        "min_r2",
        "max_error_increase",
    )
}


@dataclass
class ExportSettings:
    saved_model: bool
    tflite: list[
        str
    ]  # TFLite variants, see pipeline.export.tflite.TFLITE_VARIANTS; float32 is always written
    tfjs: bool
    tfjs_quantization: str  # none | float16 | uint8 weight storage
    tolerance: float  # max abs difference of float artifacts from the trained model
    max_accuracy_drop: float  # max test-accuracy loss of any artifact vs the trained model
    min_agreement: (
        float  # min share of test examples a quantized artifact gives the trained model's class
    )
    max_mae_increase: (
        float  # regression: max relative test-MAE increase of any artifact vs the trained model
    )
    allow_select_tf_ops: bool  # let TFLite fall back to TensorFlow ops it cannot convert
    calibration_examples: int  # train examples calibrating the int8 variant
    latency_repeats: int  # batch-1 runs whose median is the reported latency


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
    objective: str  # final-epoch metric a sweep trial returns, see pipeline.training.sweep.available_objectives
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
    gate: GateSettings
    export: ExportSettings
    paths: PathSettings
    sweep: SweepSettings


@dataclass
class TrainRequest:
    """The parts of the config the train stage reads (and logs as TensorBoard HParams)."""

    seed: int
    model: ModelSettings
    train: TrainSettings
    augment: AugmentSettings
    cluster: ClusterSettings
    data_name: str
    allow_select_tf_ops: bool = (
        False  # export.allow_select_tf_ops: what the model check lets TFLite run
    )
    tfjs: bool = False  # export.tfjs: the model check also checks the ops against TF.js's

    @classmethod
    def from_config(cls, config: PipelineConfig) -> TrainRequest:
        return cls(
            allow_select_tf_ops=config.export.allow_select_tf_ops,
            tfjs=config.export.tfjs,
            seed=config.seed,
            model=config.model,
            train=config.train,
            augment=config.augment,
            cluster=config.cluster,
            data_name=config.data.name,
        )


MISSING_STRATEGIES = ("drop", "mean", "median", "most_frequent")
CATEGORICAL_ENCODINGS = ("onehot", "embedding")
ANOMALY_POLICIES = ("fail", "warn")
BAD_RECORD_POLICIES = ("fail", "skip")
NORMALIZERS = ("minmax", "standardize", "none")
TEST_SPLITS = ("auto", "source")
LAUNCHERS = ("auto", "ray")
CLASS_WEIGHTS = ("none", "balanced")
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adagrad")
FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")
CLASSIFICATION_LOSSES = ("auto", "sparse_categorical_crossentropy", "binary_crossentropy")
REGRESSION_LOSSES = ("auto", "mse", "mae", "huber")
LOSSES = (*CLASSIFICATION_LOSSES, *REGRESSION_LOSSES[1:])
CLASSIFICATION_METRICS = ("accuracy", "auc", "precision", "recall")
REGRESSION_METRICS = ("mae", "mse", "rmse")
METRICS = (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)
TASKS = ("classification", "regression")
REGRESSION_SOURCES = ("csv", "npz")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
# Names the registries of higher layers define; tests/test_architecture.py checks they match
# (settings is the base: it validates names without importing the modules that implement them).
SOURCE_NAMES = (
    "digits",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "npz",
    "csv",
    "image_folder",
    "breast_cancer",
    "wine",
    "iris",
)  # pipeline.data.sources.SOURCES
MODEL_NAMES = (
    "mlp",
    "cnn",
    "pima_mlp",
    "custom",
    "backbone",
)  # pipeline.training.models.MODEL_BUILDERS
# model=backbone: each tf.keras.applications backbone and its smallest input side (Keras's
# min_size without the classifier top); pipeline.training.backbone.BACKBONES has the same names.
BACKBONE_MIN_SIZES = {
    "MobileNetV2": 32,
    "ResNet50": 32,
    "ResNet50V2": 32,
    "EfficientNetB0": 32,
    "VGG16": 32,
    "DenseNet121": 32,
    "InceptionV3": 75,
    "Xception": 71,
}
BACKBONE_NAMES = tuple(BACKBONE_MIN_SIZES)
TFLITE_VARIANTS = ("float32", "dynamic_range", "float16", "int8")  # pipeline.export.tflite
TFJS_QUANTIZATIONS = ("none", "float16", "uint8")  # pipeline.export.tfjs
SWEEP_DIRECTIONS = ("minimize", "maximize")  # pipeline.training.sweep


def available_objectives(model_metrics: list[str]) -> list[str]:
    """Final-epoch metrics a sweep trial can return: the loss and each compiled metric, on train and val."""
    names = ["loss", *model_metrics]
    return [*names, *(f"val_{name}" for name in names)]


def _require(ok: bool, key: str, received: object, expected: str) -> None:
    if not ok:
        raise UserError(
            f"config: {key}={received!r} is invalid: expected {expected}; fix it in conf/ or override {key}=..."
        )


def _one_of(key: str, value: str, valid: tuple[str, ...] | list[str]) -> None:
    _require(value in valid, key, value, f"one of {', '.join(valid)}")


def _validate_export_and_gate(config: PipelineConfig) -> None:
    export, evaluate, gate = config.export, config.evaluate, config.gate
    for variant in export.tflite:
        _one_of("export.tflite", variant, TFLITE_VARIANTS)
    _require(
        len(set(export.tflite)) == len(export.tflite),
        "export.tflite",
        list(export.tflite),
        "each variant at most once",
    )
    _one_of("export.tfjs_quantization", export.tfjs_quantization, TFJS_QUANTIZATIONS)
    _require(export.tolerance > 0, "export.tolerance", export.tolerance, "a number > 0")
    _require(
        export.max_accuracy_drop <= 1,
        "export.max_accuracy_drop",
        export.max_accuracy_drop,
        "an accuracy fraction <= 1",
    )
    _require(
        0 <= export.min_agreement <= 1,
        "export.min_agreement",
        export.min_agreement,
        "a fraction of test examples in [0, 1]",
    )
    _require(
        export.calibration_examples >= 1,
        "export.calibration_examples",
        export.calibration_examples,
        "an integer >= 1",
    )
    _require(
        export.latency_repeats >= 0,
        "export.latency_repeats",
        export.latency_repeats,
        "an integer >= 0",
    )
    _require(evaluate.batch_size > 0, "evaluate.batch_size", evaluate.batch_size, "an integer > 0")
    _require(
        0 <= gate.min_accuracy <= 1, "gate.min_accuracy", gate.min_accuracy, "an accuracy in [0, 1]"
    )
    _require(
        gate.max_loss is None or gate.max_loss > 0,
        "gate.max_loss",
        gate.max_loss,
        "a number > 0 or null",
    )
    _require(
        gate.max_accuracy_regression >= 0,
        "gate.max_accuracy_regression",
        gate.max_accuracy_regression,
        "a number >= 0",
    )
    _require(
        gate.baseline is None or bool(gate.baseline.strip()),
        "gate.baseline",
        gate.baseline,
        "a metrics.json path, git:<rev>, or null",
    )


def _validate_task(config: PipelineConfig) -> None:
    """``data.task`` and the keys whose meaning depends on it (regression: loss, metrics, class weights, thresholds)."""
    data, model, gate = config.data, config.model, config.gate
    _one_of("data.task", data.task, TASKS)
    _require(
        gate.max_mae is None or gate.max_mae > 0,
        "gate.max_mae",
        gate.max_mae,
        "a number > 0 or null",
    )
    _require(
        gate.min_r2 is None or gate.min_r2 <= 1, "gate.min_r2", gate.min_r2, "an R^2 <= 1 or null"
    )
    _require(
        gate.max_error_increase >= 0,
        "gate.max_error_increase",
        gate.max_error_increase,
        "a fraction >= 0",
    )
    _require(
        config.export.max_mae_increase >= 0,
        "export.max_mae_increase",
        config.export.max_mae_increase,
        "a fraction >= 0",
    )
    if data.task == "classification":
        _one_of("model.loss", model.loss, CLASSIFICATION_LOSSES)
        wrong = [metric for metric in model.metrics if metric not in CLASSIFICATION_METRICS]
        _require(
            not wrong,
            "model.metrics",
            list(model.metrics),
            f"classification metrics ({', '.join(CLASSIFICATION_METRICS)}); {', '.join(wrong)} need data.task=regression",
        )
        return
    _require(
        data.name in REGRESSION_SOURCES,
        "data.task",
        data.task,
        f"classification for data={data.name} (regression needs a numeric target: data={' or data='.join(REGRESSION_SOURCES)})",
    )
    _one_of("model.loss", model.loss, REGRESSION_LOSSES)
    wrong = [metric for metric in model.metrics if metric not in REGRESSION_METRICS]
    if wrong:
        raise UserError(
            f"config: model.metrics={list(model.metrics)} holds classification metric(s) {', '.join(wrong)} but "
            f"data.task=regression: use model.metrics=[mae] (any of {', '.join(REGRESSION_METRICS)})"
        )
    _require(
        config.train.class_weight == "none",
        "train.class_weight",
        config.train.class_weight,
        "none under data.task=regression (class weights need classes)",
    )


def _validate_builder(model: ModelSettings) -> None:
    """``model.builder`` is set exactly for ``model=custom`` and reads ``<module>:<function>``."""
    if model.name != "custom":
        _require(
            model.builder is None,
            "model.builder",
            model.builder,
            "null unless model=custom (a builder replaces the built-in models)",
        )
        return
    module, _, function = (model.builder or "").partition(":")
    _require(
        bool(module)
        and function.isidentifier()
        and all(part.isidentifier() for part in module.split(".")),
        "model.builder",
        model.builder,
        '"<module>:<function>", e.g. "user_models.examples:functional_mlp"',
    )


def _validate_backbone(model: ModelSettings) -> None:
    """``model.backbone`` and its keys: set for ``model=backbone``, neutral for every other model."""
    fine_tune = model.fine_tune
    if model.name != "backbone":
        _require(
            model.backbone is None,
            "model.backbone",
            model.backbone,
            "null unless model=backbone (transfer learning from tf.keras.applications)",
        )
        _require(
            fine_tune.epochs == 0,
            "model.fine_tune.epochs",
            fine_tune.epochs,
            "0 unless model=backbone (fine-tuning unfreezes a pretrained backbone)",
        )
        return
    _one_of("model.backbone", model.backbone or "null", BACKBONE_NAMES)
    minimum = BACKBONE_MIN_SIZES[model.backbone]
    size = model.input_size
    _require(
        size is not None and len(size) == 2 and min(size) >= minimum,
        "model.input_size",
        size,
        f"[height, width], each >= {minimum} ({model.backbone}'s minimum)",
    )
    _require(
        model.weights is None or bool(model.weights.strip()),
        "model.weights",
        model.weights,
        "imagenet, a local weights file, or null (random initialisation)",
    )
    _require(fine_tune.epochs >= 0, "model.fine_tune.epochs", fine_tune.epochs, "an integer >= 0")
    if fine_tune.epochs == 0:
        return
    _require(
        model.freeze,
        "model.fine_tune.epochs",
        fine_tune.epochs,
        "0 with model.freeze=false (an unfrozen backbone already trains in phase one)",
    )
    _require(
        fine_tune.learning_rate is not None and fine_tune.learning_rate > 0,
        "model.fine_tune.learning_rate",
        fine_tune.learning_rate,
        "a number > 0 (e.g. 1e-5)",
    )
    start = fine_tune.unfreeze_from
    _require(
        start is None
        or (isinstance(start, str) and bool(start.strip()))
        or (isinstance(start, float) and 0 <= start < 1),
        "model.fine_tune.unfreeze_from",
        start,
        "a backbone layer's name, a fraction of its layers in [0, 1) (0.7 = the last 30%), or null",
    )


def validate(config: PipelineConfig) -> PipelineConfig:
    """Check ranges and names that types alone cannot express.

    Raises:
        UserError: naming the key, the value received and what is expected.
    """
    _one_of("data.name", config.data.name, sorted(SOURCE_NAMES))
    data = config.data
    _one_of("data.missing", data.missing, MISSING_STRATEGIES)
    _one_of("data.on_anomaly", data.on_anomaly, ANOMALY_POLICIES)
    _one_of("data.on_bad_record", data.on_bad_record, BAD_RECORD_POLICIES)
    _one_of("data.label_mode", data.label_mode, ("fine", "coarse"))
    _one_of("data.categorical", data.categorical, CATEGORICAL_ENCODINGS)
    _require(
        data.channels in (None, 1, 3),
        "data.channels",
        data.channels,
        "1 (grey), 3 (RGB) or null (keep)",
    )
    _require(
        data.image_size is None or (len(data.image_size) == 2 and min(data.image_size) > 0),
        "data.image_size",
        data.image_size,
        "[height, width] of positive integers or null (keep each image's size)",
    )
    _one_of("model.name", config.model.name, sorted(MODEL_NAMES))
    _validate_builder(config.model)
    _validate_backbone(config.model)
    pre, train, cluster = config.preprocess, config.train, config.cluster
    _require(
        0 < pre.test_fraction < 1,
        "preprocess.test_fraction",
        pre.test_fraction,
        "a fraction in (0, 1)",
    )
    _require(
        0 < pre.val_fraction < 1,
        "preprocess.val_fraction",
        pre.val_fraction,
        "a fraction in (0, 1)",
    )
    _require(
        pre.val_fraction + pre.test_fraction < 1,
        "preprocess.val_fraction",
        pre.val_fraction,
        f"val_fraction + test_fraction < 1 (test_fraction={pre.test_fraction})",
    )
    _one_of("preprocess.normalize", pre.normalize, NORMALIZERS)
    _require(pre.num_shards >= 1, "preprocess.num_shards", pre.num_shards, "an integer >= 1")
    _require(train.epochs > 0, "train.epochs", train.epochs, "an integer > 0")
    _require(train.batch_size > 0, "train.batch_size", train.batch_size, "an integer > 0")
    _require(train.learning_rate > 0, "train.learning_rate", train.learning_rate, "a number > 0")
    _one_of("train.optimizer", train.optimizer, OPTIMIZERS)
    _require(
        train.shuffle_buffer >= 1, "train.shuffle_buffer", train.shuffle_buffer, "an integer >= 1"
    )
    _require(
        train.checkpoint_every >= 1,
        "train.checkpoint_every",
        train.checkpoint_every,
        "an integer >= 1",
    )
    _require(
        0 <= config.model.dropout_rate < 1,
        "model.dropout_rate",
        config.model.dropout_rate,
        "a rate in [0, 1)",
    )
    _require(config.model.l2 >= 0, "model.l2", config.model.l2, "a number >= 0")
    _require(
        config.model.embedding_dim >= 0,
        "model.embedding_dim",
        config.model.embedding_dim,
        "an integer >= 0 (0 = sized by the vocabulary)",
    )
    _one_of("model.loss", config.model.loss, LOSSES)
    for metric in config.model.metrics:
        _one_of("model.metrics", metric, METRICS)
    _one_of("augment.flip", config.augment.flip, FLIP_MODES)
    _one_of("preprocess.test_split", pre.test_split, TEST_SPLITS)
    _one_of("train.class_weight", train.class_weight, CLASS_WEIGHTS)
    for key in ("rotation", "zoom", "translation", "contrast", "noise"):
        value = getattr(config.augment, key)
        _require(0 <= value < 1, f"augment.{key}", value, "a number in [0, 1)")
    _require(
        cluster.num_workers >= 1, "cluster.num_workers", cluster.num_workers, "an integer >= 1"
    )
    _require(
        cluster.cpus_per_worker >= 1,
        "cluster.cpus_per_worker",
        cluster.cpus_per_worker,
        "an integer >= 1",
    )
    _require(
        train.batch_size % cluster.num_workers == 0,
        "train.batch_size",
        train.batch_size,
        f"a global batch divisible by cluster.num_workers={cluster.num_workers}",
    )
    _require(
        pre.num_shards >= cluster.num_workers,
        "preprocess.num_shards",
        pre.num_shards,
        f"at least cluster.num_workers={cluster.num_workers} shards so every worker reads data",
    )
    _require(
        train.steps_per_execution == "auto"
        or (isinstance(train.steps_per_execution, int) and train.steps_per_execution >= 1),
        "train.steps_per_execution",
        train.steps_per_execution,
        "auto or an integer >= 1",
    )
    _require(
        train.keep_checkpoints >= 1,
        "train.keep_checkpoints",
        train.keep_checkpoints,
        "an integer >= 1",
    )
    _require(
        train.max_failures >= -1,
        "train.max_failures",
        train.max_failures,
        "an integer >= 0 (-1: retry forever)",
    )
    _require(
        cluster.connect_timeout > 0,
        "cluster.connect_timeout",
        cluster.connect_timeout,
        "a number of seconds > 0",
    )
    _one_of("cluster.placement_strategy", cluster.placement_strategy, PLACEMENT_STRATEGIES)
    _one_of("cluster.launcher", cluster.launcher, LAUNCHERS)
    _require(
        all(amount > 0 for amount in cluster.resources_per_worker.values()),
        "cluster.resources_per_worker",
        cluster.resources_per_worker,
        "positive amounts of custom Ray resources",
    )
    _require(
        not {"CPU", "GPU"} & set(cluster.resources_per_worker),
        "cluster.resources_per_worker",
        cluster.resources_per_worker,
        "custom resources only (CPU and GPU come from cluster.cpus_per_worker and cluster.use_gpu)",
    )
    _validate_export_and_gate(config)
    _validate_task(config)
    sweep = config.sweep
    _require(
        bool(sweep.name) and "/" not in sweep.name and sweep.name not in (".", ".."),
        "sweep.name",
        sweep.name,
        "a plain directory name (no '/')",
    )
    _one_of("sweep.direction", sweep.direction, SWEEP_DIRECTIONS)
    _one_of("sweep.objective", sweep.objective, available_objectives(config.model.metrics))
    return config
