"""Model registry, optimizers and losses (augmentation: test_augment.py; input pipelines: test_inputs.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from helpers.config import compose
from pipeline.env import import_tensorflow
from pipeline.errors import UserError
from pipeline.training.models import (
    MODEL_BUILDERS,
    build_model,
    compile_model,
    loss_name,
    steps_per_execution,
)

tf = import_tensorflow()


def test_tf_keras_is_the_flavour():
    from pipeline.env import preflight

    assert "tf-keras" in preflight()
    assert type(tf.keras.layers.Dense(1)).__module__.startswith("tf_keras")


def test_seed_architectures():
    mlp = build_model(compose("model=mlp").model, (8, 8, 1), 10)
    dense = [layer.units for layer in mlp.layers if isinstance(layer, tf.keras.layers.Dense)]
    assert dense == [64, 64, 10] and mlp.output_shape == (None, 10)
    cnn = build_model(compose("model=cnn").model, (8, 8, 1), 10)
    kinds = [type(layer).__name__ for layer in cnn.layers]
    assert kinds.count("Conv2D") == 2 and kinds.count("MaxPooling2D") == 2 and "Dense" in kinds
    pima = build_model(compose("model=pima_mlp").model, (8,), 2)
    dense = [
        (layer.units, layer.activation.__name__)
        for layer in pima.layers
        if isinstance(layer, tf.keras.layers.Dense)
    ]
    assert dense[0] == (12, "relu") and dense[-1] == (1, "sigmoid")
    assert loss_name(compose("model=pima_mlp").model, 2) == "binary_crossentropy"


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop", "adagrad"])
def test_optimizers_compile_with_the_configured_learning_rate(optimizer):
    config = compose("model=mlp", f"train.optimizer={optimizer}", "train.learning_rate=0.02")
    model = compile_model(build_model(config.model, (4,), 3), config.model, config.train, 3)
    assert type(model.optimizer).__name__.lower() == optimizer
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.02)


def test_auto_steps_per_execution_follows_the_models_size():
    """auto: 8 batches per call for the seeds' small models, 1 for a backbone's 150+ layers (its
    nested layers counted); a number is used as given."""
    assert compose().train.steps_per_execution == "auto"  # every compile_model resolves it
    cnn = build_model(compose("model=cnn").model, (8, 8, 1), 10)
    assert steps_per_execution(cnn, "auto") == 8
    backbone = build_model(
        compose("model=backbone", "model.input_size=[32,32]").model, (8, 8, 1), 10
    )
    assert steps_per_execution(backbone, "auto") == 1
    assert steps_per_execution(backbone, 4) == 4 and steps_per_execution(cnn, 1) == 1


def test_regularisation_options_are_built():
    settings = dataclasses.replace(
        compose("model=mlp").model, dropout_rate=0.3, l2=0.01, batch_norm=True
    )
    model = build_model(settings, (4,), 3)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Dropout", "BatchNormalization"} <= kinds
    assert model.losses, "L2 penalties are part of the model's losses"


def test_binary_metrics_and_their_misuse():
    config = compose("model=pima_mlp", "model.metrics=[accuracy,auc,precision,recall]")
    model = compile_model(build_model(config.model, (8,), 2), config.model, config.train, 2)
    model.fit(np.random.rand(16, 8), np.arange(16) % 2, verbose=0)
    assert {"auc", "precision", "recall"} <= set(model.metrics_names) | {
        m.name for m in model.metrics
    }
    with pytest.raises(UserError, match="needs binary labels"):
        compile_model(build_model(config.model, (8,), 3), config.model, config.train, 3)


def test_unknown_model_lists_the_registry():
    settings = dataclasses.replace(compose().model, name="vgg")
    with pytest.raises(UserError, match=", ".join(sorted(MODEL_BUILDERS))):
        build_model(settings, (8, 8, 1), 10)


@pytest.mark.parametrize(
    "overrides,shape,classes",
    [
        (("model=cnn",), (8, 8, 1), 10),  # sparse categorical accuracy
        (("model=pima_mlp", "model.metrics=[accuracy,auc,precision,recall]"), (8,), 2),
        (("experiment=regression", "train.optimizer=rmsprop", "model.metrics=[mae,rmse]"), (6,), 0),
        (("model=custom", "model.builder=user_models.examples:subclassed_mlp"), (6,), 3),
    ],
)
def test_the_train_step_is_traced_once_and_trains_as_keras_lazy_variables_do(
    overrides, shape, classes, monkeypatch
):
    """compile_model creates the optimizer's and metrics' variables up front, so fit traces its
    train step once, not twice; the weights, metrics and metric classes are what Keras's own
    creation inside the first step gives."""
    from pipeline.training import models

    config = compose(*overrides)
    rng = np.random.default_rng(0)
    x = rng.random((48, *shape), dtype=np.float32)
    y = rng.normal(50, 5, 48).astype(np.float32) if classes == 0 else rng.integers(0, classes, 48)
    target = {"mean": 50.0, "std": 5.0} if classes == 0 else None

    def fitted():
        tf.keras.utils.set_random_seed(0)
        built = build_model(config.model, shape, classes, target=target)
        model = compile_model(built, config.model, config.train, classes)
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history
        return model, history

    model, history = fitted()
    with monkeypatch.context() as patch:
        patch.setattr(models, "build_step_variables", lambda *args: False)
        lazy, lazy_history = fitted()
    assert model.train_function.experimental_get_tracing_count() == 1
    assert lazy.train_function.experimental_get_tracing_count() == 2  # TensorFlow's retrace
    assert [type(m).__name__ for m in model.metrics] == [type(m).__name__ for m in lazy.metrics]
    assert history == lazy_history
    assert len(model.optimizer.variables) == len(lazy.optimizer.variables) > 1
    ours = [*model.get_weights(), *(v.numpy() for v in model.optimizer.variables)]
    theirs = [*lazy.get_weights(), *(v.numpy() for v in lazy.optimizer.variables)]
    for mine, keras in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(mine, keras)
