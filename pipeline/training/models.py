"""Models built by name from a small registry, with optimizer, loss and metrics from settings.

Every builder takes ``(settings, input_shape, num_classes, embeddings)`` and returns an
uncompiled ``tf.keras.Model``. Two classes give one sigmoid unit (binary cross-entropy); more give
softmax. ``embeddings`` (preprocess's ``meta.json``) names the table features that are category
codes (``data.categorical=embedding``): the MLP embeds each inside the graph and concatenates the
vectors with the numeric features, so the model (and every export) still takes one float tensor.
No classes (``num_classes=0``: a regression target, ``data.task=regression``) give one linear unit
whose output :func:`build_model` rescales by the train target's std and mean inside the model
(a ``Rescaling`` layer named ``predictions``), so training fits a standardised target while the
model and its exports predict in the target's units; the loss is ``mse`` (or ``mae``, ``huber``) of
the error in train target standard deviations (:func:`standardized_loss_class`) and the metrics
``mae``, ``mse``, ``rmse`` are in the target's units.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from pipeline.errors import UserError
from pipeline.settings import ModelSettings, TrainSettings


def _regularizer(settings: ModelSettings):
    import tensorflow as tf

    return tf.keras.regularizers.l2(settings.l2) if settings.l2 > 0 else None


def _dense_block(x, units: int, settings: ModelSettings):
    """Dense (+ batch norm before the activation when enabled) (+ dropout)."""
    import tensorflow as tf

    if settings.batch_norm:
        x = tf.keras.layers.Dense(units, kernel_regularizer=_regularizer(settings), use_bias=False)(
            x
        )
        x = tf.keras.layers.BatchNormalization()(x)
        x = tf.keras.layers.Activation(settings.activation)(x)
    else:
        x = tf.keras.layers.Dense(
            units, activation=settings.activation, kernel_regularizer=_regularizer(settings)
        )(x)
    if settings.dropout_rate > 0:
        x = tf.keras.layers.Dropout(settings.dropout_rate)(x)
    return x


def _output(x, num_classes: int):
    import tensorflow as tf

    if (
        num_classes == REGRESSION
    ):  # one linear unit predicting the standardised target (build_model rescales it)
        return tf.keras.layers.Dense(1, name="standardized_target")(x)
    if num_classes == 2:
        return tf.keras.layers.Dense(1, activation="sigmoid", name="probabilities")(x)
    return tf.keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)


def embedding_dim(settings: ModelSettings, input_dim: int) -> int:
    """``model.embedding_dim``, or for 0 the fast.ai-style rule ``min(50, (categories + 1) // 2)`` (at least 1)."""
    return settings.embedding_dim or max(1, min(50, input_dim // 2))


def _embedded_table(inputs, settings: ModelSettings, embeddings: list[dict]):
    """Numeric features as they are, each category-code feature through its own ``Embedding``, concatenated."""
    import tensorflow as tf

    coded = {spec["feature"] for spec in embeddings}
    numeric = [index for index in range(inputs.shape[-1]) if index not in coded]
    parts = [tf.gather(inputs, numeric, axis=1)] if numeric else []
    for spec in embeddings:
        codes = tf.clip_by_value(
            tf.round(inputs[:, spec["feature"]]), 0.0, float(spec["input_dim"] - 1)
        )
        layer = tf.keras.layers.Embedding(
            spec["input_dim"],
            embedding_dim(settings, spec["input_dim"]),
            name=f"embedding_{spec['feature']}",
        )
        parts.append(layer(codes))
    return tf.keras.layers.Concatenate(name="table_features")(parts) if len(parts) > 1 else parts[0]


def build_mlp(
    settings: ModelSettings,
    input_shape: tuple[int, ...],
    num_classes: int,
    embeddings: list[dict] | None = None,
):
    """The seeds' multilayer perceptron: flatten (or embed category codes), ``hidden_units`` dense layers, output."""
    import tensorflow as tf

    inputs = tf.keras.Input(shape=input_shape, name="inputs")
    if embeddings:
        x = _embedded_table(inputs, settings, embeddings)
    else:
        x = tf.keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for units in settings.hidden_units:
        x = _dense_block(x, units, settings)
    return tf.keras.Model(inputs, _output(x, num_classes), name=settings.name)


def build_cnn(
    settings: ModelSettings,
    input_shape: tuple[int, ...],
    num_classes: int,
    embeddings: list[dict] | None = None,
):
    """The seeds' CNN: (conv, max-pool) per entry of ``filters``, then dense ``hidden_units``, output."""
    import tensorflow as tf

    if len(input_shape) != 3:
        raise UserError(
            f"model: cnn needs image inputs (height, width, channels), got shape {tuple(input_shape)}: use model=mlp for tabular data"
        )
    inputs = tf.keras.Input(shape=input_shape, name="inputs")
    x = inputs
    for filters in settings.filters:
        x = tf.keras.layers.Conv2D(
            filters,
            settings.kernel_size,
            padding="same",
            kernel_regularizer=_regularizer(settings),
            use_bias=not settings.batch_norm,
        )(x)
        if settings.batch_norm:
            x = tf.keras.layers.BatchNormalization()(x)
        x = tf.keras.layers.Activation(settings.activation)(x)
        x = tf.keras.layers.MaxPooling2D(pool_size=2, padding="same")(x)
    x = tf.keras.layers.Flatten()(x)
    for units in settings.hidden_units:
        x = _dense_block(x, units, settings)
    return tf.keras.Model(inputs, _output(x, num_classes), name=settings.name)


# pima_mlp is the seeds' tabular MLP (12 relu -> 8 relu -> 1 sigmoid): the MLP builder with its
# own conf/model/pima_mlp.yaml widths; a separate name keeps configs and run names readable.
def build_custom(
    settings: ModelSettings, input_shape: tuple[int, ...], num_classes: int, embeddings=None
):
    """``model=custom``: the user's builder (:mod:`pipeline.training.custom`)."""
    from pipeline.training.custom import build_custom as build

    return build(settings, input_shape, num_classes, embeddings)


def build_backbone(
    settings: ModelSettings, input_shape: tuple[int, ...], num_classes: int, embeddings=None
):
    """``model=backbone``: a pretrained backbone (:mod:`pipeline.training.backbone`) under this
    module's dense ``hidden_units`` and output."""
    from pipeline.training.backbone import build_backbone as build

    def head(x):
        for units in settings.hidden_units:
            x = _dense_block(x, units, settings)
        return _output(x, num_classes)

    return build(settings, input_shape, num_classes, embeddings, head=head)


MODEL_BUILDERS: dict[str, Callable] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "pima_mlp": build_mlp,
    "custom": build_custom,
    "backbone": build_backbone,
}
REGRESSION = 0  # num_classes of a regression target (no class names): one linear output unit


def build_model(
    settings: ModelSettings,
    input_shape: tuple[int, ...],
    num_classes: int,
    embeddings: list[dict] | None = None,
    target: dict | None = None,
):
    """Build the model named ``settings.name``.

    Args:
        num_classes: the number of classes; ``0`` (:data:`REGRESSION`, ``meta.json`` of a regression
            run has no class names) builds a regression model.
        target: a regression target's train ``mean`` and ``std`` (``meta.json``'s ``target``): the
            linear unit's output is multiplied by ``std`` and ``mean`` is added inside the model, so
            the network learns a standardised target while the model (and every export) predicts in
            the target's own units.

    Example:
        >>> model = build_model(settings, input_shape=(8, 8, 1), num_classes=10)
        >>> regressor = build_model(settings, input_shape=(6,), num_classes=0, target={"mean": 50.0, "std": 12.0})

    Raises:
        UserError: unknown name, listing the valid ones.
    """
    import tensorflow as tf

    if settings.name not in MODEL_BUILDERS:
        raise UserError(
            f"model: unknown model '{settings.name}': choose one of {', '.join(sorted(MODEL_BUILDERS))}"
        )
    model = MODEL_BUILDERS[settings.name](
        settings, tuple(input_shape), num_classes, embeddings or None
    )
    if num_classes != REGRESSION:
        return model
    if not target:
        raise UserError(
            "model: a regression model needs the target's train mean and std (meta.json 'target'): rerun preprocess"
        )
    # float32 even under mixed_float16: a target mean such as 1e5 overflows float16 (max 65504)
    rescale = tf.keras.layers.Rescaling(
        scale=float(target["std"]),
        offset=float(target["mean"]),
        name="predictions",
        dtype="float32",
    )
    return with_output_layer(model, input_shape, rescale)


def with_output_layer(model, input_shape: tuple[int, ...], layer):
    """``model`` followed by ``layer`` as one functional model; a subclassed model (no symbolic
    inputs) is called on a new ``Input`` of ``input_shape``."""
    import tensorflow as tf

    if model.inputs:
        return tf.keras.Model(model.inputs, layer(model.outputs[0]), name=model.name)
    inputs = tf.keras.Input(tuple(input_shape))
    return tf.keras.Model(inputs, layer(model(inputs)), name=model.name)


def make_optimizer(train: TrainSettings, learning_rate: float | None = None):
    """A fresh Keras optimizer named by ``train.optimizer`` (Adam with fused updates:
    :mod:`pipeline.training.fused_adam`)."""
    import tensorflow as tf

    from pipeline.training.fused_adam import fuse_adam

    optimizers = {
        "adam": tf.keras.optimizers.Adam,
        "sgd": tf.keras.optimizers.SGD,
        "rmsprop": tf.keras.optimizers.RMSprop,
        "adagrad": tf.keras.optimizers.Adagrad,
    }
    if train.optimizer not in optimizers:
        raise UserError(
            f"train: unknown optimizer '{train.optimizer}': choose one of {', '.join(sorted(optimizers))}"
        )
    return fuse_adam(
        optimizers[train.optimizer](learning_rate=learning_rate or train.learning_rate)
    )


def loss_name(settings: ModelSettings, num_classes: int) -> str:
    """The loss to compile with: ``auto`` follows the output layer (a regression model: ``mse``).

    Raises:
        UserError: a classification loss for a regression model or the reverse.
    """
    regression_losses = ("mse", "mae", "huber")
    if (num_classes == REGRESSION) != (
        settings.loss in regression_losses
    ) and settings.loss != "auto":
        wanted = (
            "mse, mae or huber"
            if num_classes == REGRESSION
            else "binary_crossentropy or sparse_categorical_crossentropy"
        )
        labels = "a regression target" if num_classes == REGRESSION else "class labels"
        raise UserError(
            f"model: model.loss={settings.loss} does not fit {labels}: set model.loss=auto (or {wanted})"
        )
    if settings.loss != "auto":
        return settings.loss
    if num_classes == REGRESSION:
        return "mse"
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"


def regression_metrics(names: list[str]) -> list:
    """Keras metrics for a regression model, named as ``model.metrics`` names them (``mae``, ``mse``, ``rmse``)."""
    import tensorflow as tf

    known = {
        "mae": tf.keras.metrics.MeanAbsoluteError,
        "mse": tf.keras.metrics.MeanSquaredError,
        "rmse": tf.keras.metrics.RootMeanSquaredError,
    }
    wrong = [name for name in names if name not in known]
    if wrong:
        raise UserError(
            f"model: model.metrics={list(names)} holds classification metric(s) {', '.join(wrong)} but the data is a "
            f"regression target: use model.metrics=[mae] (any of {', '.join(known)})"
        )
    return [known[name](name=name) for name in names]


def make_metrics(settings: ModelSettings, num_classes: int) -> list:
    """Keras metric objects for the names in ``settings.metrics``."""
    import tensorflow as tf

    if num_classes == REGRESSION:
        return regression_metrics(settings.metrics)
    binary_only = {
        "auc": tf.keras.metrics.AUC,
        "precision": tf.keras.metrics.Precision,
        "recall": tf.keras.metrics.Recall,
    }
    metrics = []
    for name in settings.metrics:
        if name == "accuracy":
            metrics.append("accuracy")
        elif num_classes == 2:
            metrics.append(binary_only[name](name=name))
        elif name not in binary_only:
            raise UserError(
                f"model: metric '{name}' needs a regression target (data.task=regression) but the data has "
                f"{num_classes} classes: use model.metrics=[accuracy]"
            )
        else:
            raise UserError(
                f"model: metric '{name}' needs binary labels, the data has {num_classes} classes: use model.metrics=[accuracy]"
            )
    return metrics


@functools.cache
def standardized_loss_class():
    """The Keras loss class of regression models (registered, so a checkpoint loads with its compile config).

    ``StandardizedLoss(base, scale)`` is the ``base`` loss (``mse``, ``mae``, ``huber``) of
    ``y_true / scale`` and ``y_pred / scale`` with ``scale`` the train target's std: the error in
    standard deviations, the units the network's linear unit works in, so gradients keep the same
    size whatever the target's scale (with a target in the millions, plain SGD on an MSE in the
    target's units diverges at once) and ``huber``'s delta of 1 means one std.
    """
    import tensorflow as tf

    @tf.keras.utils.register_keras_serializable(package="pipeline")
    class StandardizedLoss(tf.keras.losses.Loss):
        def __init__(
            self, base: str = "mse", scale: float = 1.0, name: str | None = None, **kwargs
        ):
            super().__init__(name=name or base, **kwargs)
            self.base, self.scale = base, float(scale)
            self._loss = tf.keras.losses.get(base)

        def call(self, y_true, y_pred):
            y_true = tf.cast(y_true, y_pred.dtype)
            return self._loss(y_true / self.scale, y_pred / self.scale)

        def get_config(self):
            return {**super().get_config(), "base": self.base, "scale": self.scale}

    return StandardizedLoss


def make_loss(model, settings: ModelSettings, num_classes: int):
    """:func:`loss_name`'s loss; a regression model's divided by its target std (:func:`standardized_loss_class`)."""
    name = loss_name(settings, num_classes)
    if num_classes != REGRESSION:
        return name
    return standardized_loss_class()(name, scale=float(model.get_layer("predictions").scale))


# train.steps_per_execution=auto: batches per compiled call by the model's size. A small model's step
# is shorter than the host round trip that 8 batches per call save (the default CNN and MLP on CPU:
# docs/benchmarks.md#train-stage-overhead); a large one's step is long enough that the round trip
# costs nothing, while tracing Keras's fit loop of several steps took MobileNetV2 (154 layers) 27 s
# against 12 s for one step per call, paid again at every compile (a backbone's fine-tuning phase)
# (docs/benchmarks.md#steps-per-execution-for-large-models).
AUTO_STEPS_PER_EXECUTION = 8
AUTO_MAX_LAYERS = 100  # layers, counting those nested in a backbone or a submodel


def steps_per_execution(model, setting: int | str) -> int:
    """Batches per compiled Keras call for ``model``: ``train.steps_per_execution`` when it is a
    number; for ``auto``, :data:`AUTO_STEPS_PER_EXECUTION` for models of at most
    :data:`AUTO_MAX_LAYERS` layers (nested ones counted) and 1 for larger ones."""
    if setting != "auto":
        return int(setting)
    import tensorflow as tf

    layers = sum(isinstance(module, tf.keras.layers.Layer) for module in model.submodules)
    return AUTO_STEPS_PER_EXECUTION if layers <= AUTO_MAX_LAYERS else 1


def compile_model(
    model,
    model_settings: ModelSettings,
    train: TrainSettings,
    num_classes: int,
    learning_rate: float | None = None,
):
    """Compile ``model`` with the configured optimizer, loss and metrics (their variables created
    now: :func:`build_step_variables`); return it."""
    model.compile(
        optimizer=make_optimizer(train, learning_rate),
        loss=make_loss(model, model_settings, num_classes),
        metrics=make_metrics(model_settings, num_classes),
        steps_per_execution=steps_per_execution(model, train.steps_per_execution),
    )
    build_step_variables(model, num_classes)
    return model


def build_step_variables(model, num_classes: int) -> bool:
    """Create now, in the current strategy's scope, the variables Keras creates inside the first
    compiled train step: the optimizer's slots and the compiled loss's and metrics' accumulators.

    A ``tf.function`` that creates variables on its first call is traced a second time without
    them (TensorFlow's polymorphic_function), so otherwise every ``fit`` and the model check's
    ``train_on_batch`` trace the whole train step twice: ~40% of the first epoch's start for a small
    model under MultiWorkerMirroredStrategy, seconds for a backbone
    (docs/benchmarks.md#one-trace-of-the-train-step). The same zero-initialised variables are
    created either way, so training is unchanged.

    Models whose outputs are not known before a call (a subclassed model) or that have several are
    left to Keras (two traces, as before). Returns whether the variables were created.
    """
    import tensorflow as tf

    outputs = getattr(model, "outputs", None) or []
    optimizer = getattr(model, "optimizer", None)
    if (
        not model.built
        or len(outputs) != 1
        or not isinstance(optimizer, tf.keras.optimizers.Optimizer)
    ):
        return False
    # The labels' spec of the data contract (pipeline.data.shards): one int64 class id, or one
    # float32 target, per example. Keras picks the metric classes ('accuracy': sparse, binary...)
    # from these shapes as it would from the first batch's; 2 examples keep the label's last
    # dimension from reading as 1.
    labels = tf.zeros([2], tf.float32 if num_classes == REGRESSION else tf.int64)
    predictions = tf.zeros([2, *outputs[0].shape[1:]], outputs[0].dtype)
    optimizer.build(model.trainable_variables)
    model.compiled_loss.build(predictions)
    model.compiled_metrics.build(predictions, labels)
    return True
