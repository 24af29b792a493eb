"""kp-check-model's checks in-process (pipeline.training.check.check_model): each refusal is one line
naming the culprit and the fix, for builders the test writes and for model=backbone."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest

from helpers.config import compose
from pipeline.env import import_tensorflow
from pipeline.errors import UserError
from pipeline.training.check import check_model

tf = import_tensorflow()

# Builders with one op each: TFLite has SpaceToDepth built in, TF.js's op list lacks it;
# MatrixInverse runs in TFLite only with its TensorFlow ops (Flex); an unregistered custom layer
# cannot be reloaded; one whose get_config forgets an argument reloads as another model.
BUILDERS = """
import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="check_test")
class Apply(tf.keras.layers.Layer):
    def __init__(self, op="space_to_depth", **kwargs):
        super().__init__(**kwargs)
        self.op = op

    def call(self, x):
        if self.op == "space_to_depth":
            return tf.nn.space_to_depth(x, 2)
        square = x[..., 0] + 8.0 * tf.eye(x.shape[1])  # invertible
        return tf.linalg.inv(square)[..., None]

    def get_config(self):
        return {**super().get_config(), "op": self.op}


@tf.keras.utils.register_keras_serializable(package="check_test")
class Scale(tf.keras.layers.Layer):
    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):  # forgets factor: reloaded, it is 1.0
        return super().get_config()


class Unregistered(tf.keras.layers.Layer):
    def call(self, x):
        return x * 2.0


def _head(x, num_classes):
    x = tf.keras.layers.Flatten()(x)
    return tf.keras.layers.Dense(num_classes, activation="softmax")(x)


def space_to_depth(input_shape, num_classes):
    inputs = tf.keras.Input(input_shape)
    return tf.keras.Model(inputs, _head(Apply("space_to_depth")(inputs), num_classes))


def inverse(input_shape, num_classes):
    inputs = tf.keras.Input(input_shape)
    return tf.keras.Model(inputs, _head(Apply("inverse")(inputs), num_classes))


def forgetful(input_shape, num_classes):
    inputs = tf.keras.Input(input_shape)
    return tf.keras.Model(inputs, _head(Scale(3.0)(inputs), num_classes))


def unregistered(input_shape, num_classes):
    inputs = tf.keras.Input(input_shape)
    return tf.keras.Model(inputs, _head(Unregistered()(inputs), num_classes))
"""


@functools.cache
def _composed(model: str):
    return compose(f"model={model}")  # once per model: Hydra is slow


def custom(builder: str):
    return dataclasses.replace(_composed("custom").model, builder=builder, params={})


def backbone(**overrides):
    return dataclasses.replace(_composed("backbone").model, input_size=[32, 32], **overrides)


@pytest.fixture
def processed(tmp_path, monkeypatch):
    """preprocess's meta.json for digits-like 8x8 grey images in 10 classes, and the builders."""
    (tmp_path / "check_builders.py").write_text(BUILDERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    meta = {"input_shape": [8, 8, 1], "class_names": [str(c) for c in range(10)]}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    return tmp_path


def refusal(model, processed, **options) -> str:
    with pytest.raises(UserError) as caught:
        check_model(model, _composed("custom").train, processed, **options)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(("model:", "check-model:")), message
    return message


def test_a_good_builder_passes_with_the_tfjs_check(processed):
    result = check_model(
        custom("user_models.examples:subclassed_mlp"),
        _composed("custom").train,
        processed,
        tfjs=True,
    )
    assert result["output_shape"] == [10] and result["tflite_bytes"] > 0 and result["tfjs_checked"]


def test_an_op_tfjs_cannot_run_is_refused_only_when_tfjs_is_exported(processed):
    model = custom("check_builders:space_to_depth")
    passed = check_model(model, _composed("custom").train, processed, tfjs=False)
    assert passed["tflite_bytes"] > 0 and not passed["tfjs_checked"]  # TFLite runs it
    message = refusal(model, processed, tfjs=True)
    assert message.startswith("model: TF.js cannot run the op SpaceToDepth")
    assert "set export.tfjs=false" in message


def test_an_op_tflite_cannot_run_names_it_and_allow_select_tf_ops(processed):
    model = custom("check_builders:inverse")
    message = refusal(model, processed)
    assert (
        "TFLite cannot run the op tf.MatrixInverse: set export.allow_select_tf_ops=true" in message
    )
    assert check_model(model, _composed("custom").train, processed, allow_select_tf_ops=True)


def test_a_layer_that_cannot_be_reloaded_is_one_line(processed):
    message = refusal(custom("check_builders:unregistered"), processed)
    assert "cannot be saved and reloaded" in message
    assert "register_keras_serializable" in message


def test_a_layer_whose_config_forgets_an_argument_is_one_line(processed):
    message = refusal(custom("check_builders:forgetful"), processed)
    assert "the reloaded model predicts differently from the trained one" in message
    assert "get_config() misses a constructor argument" in message


def test_a_missing_meta_json_names_the_preprocess_stage(tmp_path):
    message = refusal(custom("user_models.examples:subclassed_mlp"), tmp_path / "nowhere")
    assert "meta.json is missing: run the preprocess stage first" in message


def test_an_unknown_backbone_and_weights_of_another_network_are_one_line(processed):
    message = refusal(backbone(backbone="ResNet18"), processed)
    assert "unknown backbone 'ResNet18': choose one of MobileNetV2, ResNet50" in message
    tiny = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    other = processed / "tiny.h5"
    tiny.save_weights(str(other))
    message = refusal(backbone(weights=str(other)), processed)
    assert f"model.weights={other} does not fit MobileNetV2" in message


def test_the_checks_one_train_step_runs_without_the_graph_optimizer_which_comes_back(
    processed, monkeypatch
):
    """Grappler is off for the one step the check trains (optimizing it cost more than running it)
    and back as it was afterwards, also after a failed step, so the fit that follows is optimized."""
    from pipeline.training import check

    seen = []

    def train_on_batch(self, *args, **kwargs):
        seen.append(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer"))
        raise ValueError("a step that fails")

    monkeypatch.setattr(tf.keras.Model, "train_on_batch", train_on_batch)
    config = compose("model=mlp")
    with pytest.raises(ValueError, match="a step that fails"):
        check.check_model(config.model, config.train, processed)
    assert seen == [True]
    assert not tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer")
