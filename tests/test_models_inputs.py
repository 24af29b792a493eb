"""Model registry, optimizers, augmentation and the sharded tf.data input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import compose
from pipeline.augment import build_augmenter, is_enabled
from pipeline.env import import_tensorflow
from pipeline.errors import UserError
from pipeline.inputs import make_dataset, plan_shards
from pipeline.models import MODEL_BUILDERS, build_model, compile_model, loss_name
from pipeline.preprocess import write_shards

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
    dense = [(layer.units, layer.activation.__name__) for layer in pima.layers if isinstance(layer, tf.keras.layers.Dense)]
    assert dense[0] == (12, "relu") and dense[-1] == (1, "sigmoid")
    assert loss_name(compose("model=pima_mlp").model, 2) == "binary_crossentropy"


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop", "adagrad"])
def test_optimizers_compile_with_the_configured_learning_rate(optimizer):
    config = compose("model=mlp", f"train.optimizer={optimizer}", "train.learning_rate=0.02")
    model = compile_model(build_model(config.model, (4,), 3), config.model, config.train, 3)
    assert type(model.optimizer).__name__.lower() == optimizer
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.02)


def test_regularisation_options_are_built():
    settings = dataclasses.replace(compose("model=mlp").model, dropout_rate=0.3, l2=0.01, batch_norm=True)
    model = build_model(settings, (4,), 3)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Dropout", "BatchNormalization"} <= kinds
    assert model.losses, "L2 penalties are part of the model's losses"


def test_binary_metrics_and_their_misuse():
    config = compose("model=pima_mlp", "model.metrics=[accuracy,auc,precision,recall]")
    model = compile_model(build_model(config.model, (8,), 2), config.model, config.train, 2)
    model.fit(np.random.rand(16, 8), np.arange(16) % 2, verbose=0)
    assert {"auc", "precision", "recall"} <= set(model.metrics_names) | {m.name for m in model.metrics}
    with pytest.raises(UserError, match="needs binary labels"):
        compile_model(build_model(config.model, (8,), 3), config.model, config.train, 3)


def test_unknown_model_lists_the_registry():
    settings = dataclasses.replace(compose().model, name="vgg")
    with pytest.raises(UserError, match=", ".join(sorted(MODEL_BUILDERS))):
        build_model(settings, (8, 8, 1), 10)


def test_augmentation_layers_are_seeded_and_change_images():
    config = compose("augment=light")
    assert is_enabled(config.augment) and not is_enabled(compose().augment)
    images = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    first = build_augmenter(config.augment, 3)(images, training=True).numpy()
    again = build_augmenter(config.augment, 3)(images, training=True).numpy()
    assert first.shape == images.shape and not np.allclose(first, images)
    assert np.allclose(first, again)
    assert build_augmenter(compose().augment, 3) is None


def test_shard_plan_gives_workers_disjoint_files_covering_the_split():
    shards = [{"file": f"train-{i:05d}.npz", "num_examples": n} for i, n in enumerate([10, 10, 9, 9])]
    plan = plan_shards(shards, num_workers=2, global_batch_size=8)
    assert plan.files_per_worker == [["train-00000.npz", "train-00002.npz"], ["train-00001.npz", "train-00003.npz"]]
    assert sorted(sum(plan.files_per_worker, [])) == sorted(s["file"] for s in shards)
    assert plan.per_replica_batch_size == 4 and plan.steps_per_epoch == 5
    with pytest.raises(UserError, match="not divisible"):
        plan_shards(shards, 3, 8)
    with pytest.raises(UserError, match="preprocess.num_shards >= cluster.num_workers"):
        plan_shards(shards, 5, 10)
    with pytest.raises(UserError, match="no train examples"):
        plan_shards([{"file": "a", "num_examples": 3}, {"file": "b", "num_examples": 0}], 2, 2)


def test_dataset_reads_each_shard_example_once_per_epoch(tmp_path):
    x = np.arange(30, dtype=np.float32).reshape(30, 1)
    shards = write_shards(tmp_path, "train", x, np.arange(30) % 3, 3)
    plan = plan_shards(shards, num_workers=3, global_batch_size=6)
    seen = []
    for files in plan.files_per_worker:
        dataset = make_dataset(tmp_path, files, plan.per_replica_batch_size, shuffle_buffer=100, seed=1, repeat=False)
        seen.extend(float(v) for batch_x, _ in dataset for v in batch_x.numpy().ravel())
    assert sorted(seen) == list(range(30))
