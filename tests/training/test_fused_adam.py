"""Adam's fused update (pipeline.training.fused_adam): the same training as Keras's Adam, one
``ResourceApplyAdam`` op per variable in the traced step, and Keras's own update wherever the
fused one does not apply."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.env import import_tensorflow
from pipeline.training.fused_adam import fuse_adam
from pipeline.training.model_io import load_keras_model, save_model
from pipeline.training.models import make_optimizer

tf = import_tensorflow()

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 6)).astype(np.float32)
Y = RNG.integers(0, 3, 48)
CODES = RNG.integers(0, 20, (48, 2))


def _dense_model():
    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential(
        [
            tf.keras.Input((6,)),
            tf.keras.layers.Dense(8, activation="relu"),
            tf.keras.layers.BatchNormalization(),
            tf.keras.layers.Dense(3, activation="softmax"),
        ]
    )


def _embedding_model():
    """An Embedding's gradient is IndexedSlices: Keras's sparse update must serve it."""
    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential(
        [
            tf.keras.Input((2,)),
            tf.keras.layers.Embedding(20, 4),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(3, activation="softmax"),
        ]
    )


def _train(model, optimizer, x, epochs=3):
    model.compile(optimizer, "sparse_categorical_crossentropy")
    model.fit(x, Y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return model


def _assert_close(first, second):
    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _ops(model, x=X) -> list[str]:
    """The op types of the model's traced train step (its loop body included)."""
    graph = model.train_function.get_concrete_function(
        iter(tf.data.Dataset.from_tensor_slices((x, Y)).batch(16))
    ).graph
    types = [op.type for op in graph.get_operations()]
    for function in graph.as_graph_def().library.function:
        types += [node.op for node in function.node_def]
    return types


@pytest.mark.parametrize(
    "learning_rate", [1e-2, tf.keras.optimizers.schedules.ExponentialDecay(1e-2, 2, 0.5)]
)
def test_fused_adam_trains_as_keras_adam_with_one_op_per_variable(learning_rate):
    keras = _train(_dense_model(), tf.keras.optimizers.Adam(learning_rate), X)
    fused = _train(_dense_model(), fuse_adam(tf.keras.optimizers.Adam(learning_rate)), X)
    _assert_close(keras.get_weights(), fused.get_weights())
    _assert_close(
        [v.numpy() for v in keras.optimizer.variables],
        [v.numpy() for v in fused.optimizer.variables],
    )
    assert int(fused.optimizer.iterations) == 9
    fused_ops, keras_ops = _ops(fused), _ops(keras)
    assert fused_ops.count("ResourceApplyAdam") == len(fused.trainable_variables) == 6
    assert "ResourceApplyAdam" not in keras_ops
    # Keras's update builds ~30 ops per variable here (420 ops against 231 fused)
    assert len(keras_ops) - len(fused_ops) >= 15 * 6, (len(fused_ops), len(keras_ops))


def test_fused_adam_updates_mirrored_variables_under_a_distribution_strategy():
    """The path multi-worker training takes (merge call, per-replica update of mirrored
    variables), here with one CPU replica."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _dense_model()
        optimizer = fuse_adam(tf.keras.optimizers.Adam(1e-2))
        model.compile(optimizer, "sparse_categorical_crossentropy")
    model.fit(X, Y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    assert _ops(model).count("ResourceApplyAdam") == 6
    keras = _train(_dense_model(), tf.keras.optimizers.Adam(1e-2), X)
    _assert_close(keras.get_weights(), model.get_weights())


def test_sparse_gradients_mixed_precision_and_other_optimizers_keep_keras_updates():
    keras = _train(_embedding_model(), tf.keras.optimizers.Adam(1e-2), CODES)
    fused = _train(_embedding_model(), fuse_adam(tf.keras.optimizers.Adam(1e-2)), CODES)
    _assert_close(keras.get_weights(), fused.get_weights())
    # the Dense kernel and bias, not the table
    assert _ops(fused, CODES).count("ResourceApplyAdam") == 2
    # mixed precision: Keras wraps the optimizer in a loss-scale optimizer; its inner Adam is fused
    scaled = tf.keras.mixed_precision.LossScaleOptimizer(tf.keras.optimizers.Adam(1e-2))
    assert fuse_adam(scaled) is scaled and scaled.inner_optimizer._fused_adam
    _assert_close(
        _train(_dense_model(), tf.keras.optimizers.Adam(1e-2), X).get_weights(),
        _train(_dense_model(), scaled, X).get_weights(),
    )
    for unchanged in (
        tf.keras.optimizers.Adam(amsgrad=True),
        tf.keras.optimizers.SGD(),
        tf.keras.optimizers.AdamW(),
    ):
        assert not getattr(fuse_adam(unchanged), "_fused_adam", False), unchanged


def _settings(optimizer: str):
    """What make_optimizer reads of TrainSettings."""
    return SimpleNamespace(optimizer=optimizer, learning_rate=1e-2)


def test_make_optimizer_fuses_adam_and_a_checkpoint_resumes_as_an_uninterrupted_run(tmp_path):
    adam = make_optimizer(_settings("adam"))
    assert adam._fused_adam and type(adam) is tf.keras.optimizers.Adam
    assert not getattr(make_optimizer(_settings("sgd")), "_fused_adam", False)
    uninterrupted = _train(_dense_model(), make_optimizer(_settings("adam")), X, epochs=4)
    first = _train(_dense_model(), make_optimizer(_settings("adam")), X, epochs=2)
    save_model(first, {}, tmp_path)
    loaded = load_keras_model(tmp_path / "model.keras", compile=True)
    assert type(loaded.optimizer) is tf.keras.optimizers.Adam  # the file holds Keras's Adam
    fuse_adam(loaded.optimizer)
    loaded.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    _assert_close(uninterrupted.get_weights(), loaded.get_weights())
