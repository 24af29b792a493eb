"""model=custom: users' builders with each Keras API, checked as they are built, saved and reloaded."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from helpers.config import compose
from pipeline.env import import_tensorflow
from pipeline.errors import UserError
from pipeline.training.model_io import load_trained_model, save_model
from pipeline.training.models import build_model, compile_model

tf = import_tensorflow()
BUILDERS = ("sequential_mlp", "functional_mlp", "subclassed_mlp")


def custom(builder: str = "user_models.examples:functional_mlp", **params):
    return dataclasses.replace(compose("model=custom").model, builder=builder, params=params)


@pytest.mark.parametrize("name", BUILDERS)
def test_each_keras_api_trains_saves_and_reloads_with_its_custom_objects(name, tmp_path):
    config = compose("model=custom")
    settings = custom(f"user_models.examples:{name}", width=16)
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = np.arange(64) % 10
    model = compile_model(build_model(settings, (8, 8, 1), 10), settings, config.train, 10)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    save_model(model, {"loss": [1.0]}, tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"model_module": "user_models.examples"}))
    reloaded = load_trained_model(tmp_path)
    assert np.allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("num_classes,units", [(2, 1), (0, 1), (5, 5)])
def test_binary_and_regression_outputs_and_the_pipelines_rescaling(num_classes, units):
    target = {"mean": 100.0, "std": 10.0} if num_classes == 0 else None
    model = build_model(
        custom("user_models.examples:subclassed_mlp", width=8), (6,), num_classes, target=target
    )
    out = model.predict(np.zeros((3, 6), np.float32), verbose=0)
    assert out.shape == (3, units)
    if (
        num_classes == 0
    ):  # the linear unit is rescaled to the target's units, as for the built-in models
        assert model.layers[-1].name == "predictions"


def test_a_builder_declaring_embeddings_gets_the_embedded_features(tmp_path, monkeypatch):
    module = tmp_path / "embedding_builder.py"
    module.write_text(
        "import tensorflow as tf\n"
        "SEEN = []\n"
        "def build(input_shape, num_classes, embeddings, width=4):\n"
        "    SEEN.append(embeddings)\n"
        "    inputs = tf.keras.Input(input_shape)\n"
        "    return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes, activation='softmax')(inputs))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    specs = [{"feature": 2, "column": "city", "input_dim": 4}]
    build_model(custom("embedding_builder:build"), (3,), 3, specs)
    import embedding_builder

    assert embedding_builder.SEEN == [specs]


BAD_BUILDERS = {
    "not_a_model": "def build(input_shape, num_classes):\n    return 42\n",
    "two_args_only": "def build(input_shape):\n    return None\n",
    "wrong_units": (
        "import tensorflow as tf\n"
        "def build(input_shape, num_classes):\n"
        "    inputs = tf.keras.Input(input_shape)\n"
        "    return tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation='softmax')(inputs))\n"
    ),
    "no_softmax": (
        "import tensorflow as tf\n"
        "def build(input_shape, num_classes):\n"
        "    inputs = tf.keras.Input(input_shape)\n"
        "    return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes)(inputs))\n"
    ),
    "raises": "def build(input_shape, num_classes):\n    raise ValueError('width must be even')\n",
}


@pytest.mark.parametrize(
    "builder,expected",
    [
        ("no_such_module:build", "cannot import no_such_module"),
        ("bad_builders_not_a_model:missing", "has no function missing"),
        ("bad_builders_not_a_model:build", "returned int: expected build(input_shape, num_classes"),
        ("bad_builders_two_args_only:build", "has the signature build(input_shape)"),
        (
            "bad_builders_wrong_units:build",
            "outputs shape [2, 3]: the task needs [n, 10], 10 softmax units",
        ),
        (
            "bad_builders_no_softmax:build",
            "the task needs 10 softmax units (10 classes) (activation=softmax",
        ),
        ("bad_builders_raises:build", "raised ValueError: width must be even"),
    ],
)
def test_builder_mistakes_are_one_line_naming_the_builder(builder, expected, tmp_path, monkeypatch):
    for name, text in BAD_BUILDERS.items():
        (tmp_path / f"bad_builders_{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match="^model: ") as caught:
        build_model(custom(builder), (4,), 10)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
