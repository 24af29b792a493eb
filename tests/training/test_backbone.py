"""model=backbone: a tf.keras.applications backbone under a head, built, trained, saved and
reloaded in-process (no Ray, never the network); its weights (a file the tests write, random,
an offline imagenet), freezing and fine-tuning phases."""

from __future__ import annotations

import dataclasses
import functools
import socket
import urllib.error

import numpy as np
import pytest

from helpers.config import compose
from helpers.data import write_raw
from pipeline.env import import_tensorflow
from pipeline.errors import UserError
from pipeline.settings import BACKBONE_MIN_SIZES
from pipeline.training.backbone import (
    BACKBONES,
    TRAINING_BN_MOMENTUM,
    find_backbone,
    imagenet_file_name,
    input_affine,
    unfreeze_backbone,
)
from pipeline.training.model_io import save_model
from pipeline.training.models import build_model, compile_model

tf = import_tensorflow()
SHAPE = (8, 8, 1)  # digits-like grey images
# each backbone's preprocess_input module in tf.keras.applications
PREPROCESS_MODULES = {
    "MobileNetV2": "mobilenet_v2",
    "ResNet50": "resnet50",
    "ResNet50V2": "resnet_v2",
    "EfficientNetB0": "efficientnet",
    "VGG16": "vgg16",
    "DenseNet121": "densenet",
    "InceptionV3": "inception_v3",
    "Xception": "xception",
}


def settings(**overrides):
    """conf/model/backbone.yaml with MobileNetV2 at 32x32 (small and fast) and ``overrides``."""
    base = dataclasses.replace(_composed().model, input_size=[32, 32], dropout_rate=0.0)
    fine_tune = overrides.pop("fine_tune", {})
    return dataclasses.replace(
        base, **overrides, fine_tune=dataclasses.replace(base.fine_tune, **fine_tune)
    )


@functools.cache
def _composed():
    return compose("model=backbone")  # once per module: Hydra is slow


def images(n: int = 16, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Examples as preprocess's minmax leaves them: in [0, 1]."""
    return np.random.default_rng(seed).random((n, 8, 8, channels)).astype(np.float32)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.startswith(("model:", "config:")), message
    return message


def write_weights(path) -> str:
    """A MobileNetV2 weights file (no top, 32x32), as ``model.weights`` takes pretrained weights."""
    tf.keras.utils.set_random_seed(0)
    network = tf.keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    network.save_weights(str(path))
    return str(path)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    return write_weights(tmp_path_factory.mktemp("weights") / "mobilenet_v2_32.h5")


@pytest.fixture(scope="module")
def model(weights_file):
    """MobileNetV2 (weights from a file, frozen) at 32x32 on 8x8x1 inputs, 10 classes, compiled."""
    built = build_model(settings(weights=weights_file), SHAPE, 10)
    return compile_model(built, settings(), _composed().train, 10)


def test_registry_names_match_the_settings_and_keras():
    assert set(BACKBONES) == set(BACKBONE_MIN_SIZES) == set(PREPROCESS_MODULES)
    assert all(hasattr(tf.keras.applications, name) for name in BACKBONES)


def test_builds_trains_one_batch_saves_and_reloads(model, tmp_path):
    x, y = images(), np.arange(16) % 10
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    save_model(model, {"epochs": [1]}, tmp_path)
    reloaded = tf.keras.models.load_model(str(tmp_path / "model.keras"))
    assert reloaded.predict(x, verbose=0).shape == (16, 10)
    assert np.allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    # frozen, as saved: Keras reloads the nested network's layers (not the network) as frozen
    assert len(reloaded.trainable_weights) == len(model.trainable_weights) == 2
    assert not any(layer.trainable for layer in find_backbone(reloaded).layers if layer.weights)


@pytest.mark.parametrize("num_classes,units", [(2, 1), (0, 1)])
def test_binary_and_regression_outputs(num_classes, units):
    target = {"mean": 5.0, "std": 2.0} if num_classes == 0 else None
    built = build_model(settings(hidden_units=[8]), SHAPE, num_classes, target=target)
    assert built.predict(images(3), verbose=0).shape == (3, units)


@pytest.mark.parametrize("name", sorted(PREPROCESS_MODULES))
@pytest.mark.parametrize("channels", [1, 3])
def test_the_input_map_is_255_times_the_input_through_the_backbones_preprocess_input(
    name, channels
):
    """The fixed 1x1 convolution equals keras's preprocess_input of 255 * x (grey repeated to RGB)."""
    x = images(4, channels, seed=1)
    kernel, bias = input_affine(BACKBONES[name].mode, channels)
    mapped = np.einsum("nhwi,io->nhwo", x, kernel[0, 0]) + bias
    rgb = 255.0 * np.repeat(x, 3 // channels, axis=-1)
    preprocess = getattr(tf.keras.applications, PREPROCESS_MODULES[name]).preprocess_input
    expected = np.asarray(preprocess(rgb.copy()))
    assert np.allclose(mapped, expected, atol=1e-4), name


def test_the_model_resizes_and_maps_grey_inputs_for_its_backbone(model):
    x = images(2)
    front = tf.keras.Model(model.inputs, model.get_layer("to_backbone_range").output)
    resized = tf.image.resize(x, (32, 32)).numpy()
    expected = tf.keras.applications.mobilenet_v2.preprocess_input(
        255.0 * np.repeat(resized, 3, axis=-1)
    )
    assert np.allclose(front.predict(x, verbose=0), expected, atol=1e-4)


def test_freeze_keeps_the_backbone_while_the_head_learns(model):
    network = find_backbone(model)
    backbone_before = [w.copy() for w in network.get_weights()]  # BatchNorm statistics included
    head = model.get_layer("probabilities")
    head_before = [w.copy() for w in head.get_weights()]
    model.fit(images(seed=2), np.arange(16) % 10, batch_size=16, epochs=1, verbose=0)
    assert all(
        np.array_equal(a, b) for a, b in zip(backbone_before, network.get_weights(), strict=True)
    )
    assert not all(
        np.array_equal(a, b) for a, b in zip(head_before, head.get_weights(), strict=True)
    )
    assert not model.get_layer("to_backbone_range").trainable


def test_a_weights_file_loads_back_and_a_mismatching_one_is_one_line(model, tmp_path):
    path = tmp_path / "mobilenet_v2.h5"
    find_backbone(model).save_weights(str(path))  # after a batch of training: not the seed's
    loaded = build_model(settings(weights=str(path)), SHAPE, 10)
    random = build_model(settings(), SHAPE, 10)
    saved = find_backbone(model).get_weights()  # BatchNorm statistics included
    assert all(
        np.array_equal(a, b)
        for a, b in zip(saved, find_backbone(loaded).get_weights(), strict=True)
    )
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(saved, find_backbone(random).get_weights(), strict=True)
    )
    fed = np.random.default_rng(3).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    first, second = (find_backbone(built).predict(fed, verbose=0) for built in (model, loaded))
    assert np.allclose(first, second, rtol=1e-4, atol=0)

    tiny = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    other = tmp_path / "tiny.h5"
    tiny.save_weights(str(other))
    with pytest.raises(UserError) as caught:
        build_model(settings(weights=str(other)), SHAPE, 10)
    assert f"model.weights={other} does not fit MobileNetV2" in one_line(caught)
    with pytest.raises(UserError) as caught:
        build_model(settings(weights=str(tmp_path / "missing.h5")), SHAPE, 10)
    assert "missing.h5: no such file" in one_line(caught)


def batch_norm_momenta(model) -> set[float]:
    return {
        layer.momentum
        for layer in find_backbone(model).layers
        if isinstance(layer, tf.keras.layers.BatchNormalization)
    }


def test_random_weights_train_the_whole_network_and_cannot_be_fine_tuned(caplog, tmp_path):
    """A frozen random backbone is a fixed random feature extractor (the loss stayed at ln(classes)):
    with weights=null the whole network trains (model.freeze applies to pretrained weights), said
    in one log line. An unfrozen backbone's BatchNorm runs at momentum 0.9: at Keras's 0.999 the
    moving statistics were still the initial ones after 2 epochs on digits and the model predicted
    one class (test accuracy 0.10; tests/stages/test_backbone_stages.py trains it through the
    stages); a frozen one keeps Keras's (its BatchNorm runs in inference mode)."""
    with caplog.at_level("INFO", logger="pipeline.training.backbone"):
        built = build_model(settings(freeze=True), SHAPE, 3)
    assert find_backbone(built).trainable
    assert len(built.trainable_weights) > 100  # the backbone's, not only the head's 2
    assert "the whole MobileNetV2 trains from random initialisation" in caplog.text
    assert batch_norm_momenta(built) == {TRAINING_BN_MOMENTUM}
    save_model(built, {}, tmp_path)
    reloaded = tf.keras.models.load_model(str(tmp_path / "model.keras"))
    assert batch_norm_momenta(reloaded) == {TRAINING_BN_MOMENTUM}
    pretrained = write_weights(tmp_path / "w.h5")
    assert batch_norm_momenta(build_model(settings(weights=pretrained), SHAPE, 3)) == {0.999}
    unfrozen = build_model(settings(weights=pretrained, freeze=False), SHAPE, 3)
    assert batch_norm_momenta(unfrozen) == {TRAINING_BN_MOMENTUM}  # its BatchNorm trains too
    with pytest.raises(UserError) as caught:
        build_model(settings(fine_tune={"epochs": 2}), SHAPE, 3)
    assert "model.fine_tune.epochs=2 fine-tunes pretrained weights" in one_line(caught)


@pytest.mark.parametrize(
    "name,size,file",
    [
        ("MobileNetV2", 96, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"),
        ("MobileNetV2", 40, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
        ("EfficientNetB0", 32, "efficientnetb0_notop.h5"),
    ],
)
def test_imagenet_offline_is_one_line_naming_the_file_and_where_it_goes(
    name, size, file, tmp_path, monkeypatch
):
    """Keras's own download runs and fails as offline (no DNS); nothing reaches the network."""
    from tf_keras.src.utils import data_utils

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(data_utils, "urlretrieve", offline)
    monkeypatch.setenv("HOME", str(tmp_path))  # no cached weights
    with pytest.raises(UserError) as caught:
        build_model(settings(backbone=name, weights="imagenet", input_size=[size, size]), SHAPE, 10)
    message = one_line(caught)
    assert f"could not download {file}" in message
    assert f"into {tmp_path}/.keras/models/" in message
    assert imagenet_file_name(name, [size, size]) == file  # the fallback name agrees with Keras


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ["model.backbone=ResNet18"],
            "model.backbone='ResNet18' is invalid: expected one of MobileNetV2, ResNet50,",
        ),
        (["model.input_size=[16,16]"], "each >= 32 (MobileNetV2's minimum)"),
        (
            ["model.backbone=InceptionV3", "model.input_size=[64,64]"],
            "each >= 75 (InceptionV3's minimum)",
        ),
        (
            ["model.fine_tune.epochs=2", "model.fine_tune.unfreeze_from=1.5"],
            "model.fine_tune.unfreeze_from=1.5 is invalid",
        ),
        (
            ["model.fine_tune.epochs=2", "model.fine_tune.learning_rate=0"],
            "model.fine_tune.learning_rate=0.0 is invalid",
        ),
        (["model.fine_tune.epochs=-1"], "model.fine_tune.epochs=-1 is invalid"),
    ],
)
def test_config_mistakes_are_one_line(overrides, expected):
    with pytest.raises(UserError) as caught:
        compose("model=backbone", *overrides)
    assert expected in one_line(caught)


def test_other_models_refuse_backbone_keys():
    with pytest.raises(UserError) as caught:
        compose("model=mlp", "+model.backbone=MobileNetV2")
    assert "null unless model=backbone" in one_line(caught)


def test_a_table_or_four_channels_is_one_line():
    with pytest.raises(UserError) as caught:
        build_model(settings(), (8,), 3)
    assert "needs image inputs" in one_line(caught)
    with pytest.raises(UserError) as caught:
        build_model(settings(), (8, 8, 4), 3)
    assert "1 or 3 channels" in one_line(caught)


def test_fine_tuning_unfreezes_from_a_layer_name_or_a_fraction_batchnorm_stays_frozen(
    weights_file,
):
    built = build_model(settings(weights=weights_file), SHAPE, 3)
    network = find_backbone(built)
    names = [layer.name for layer in network.layers]
    batch_norm = tf.keras.layers.BatchNormalization
    for start, index in (("block_16_expand", names.index("block_16_expand")), (0.7, None)):
        index = int(round(0.7 * len(names))) if index is None else index
        count = unfreeze_backbone(built, start)
        trainable = [layer.trainable for layer in network.layers]
        assert not any(trainable[:index]), start
        assert all(
            layer.trainable != isinstance(layer, batch_norm) for layer in network.layers[index:]
        )
        assert count == sum(trainable) > 0
    assert all(not layer.trainable for layer in network.layers if isinstance(layer, batch_norm))
    with pytest.raises(UserError) as caught:
        unfreeze_backbone(built, "block_99")
    assert "unfreeze_from='block_99' is not a layer of mobilenetv2" in one_line(caught)
    with pytest.raises(UserError) as caught:  # caught when the model is built, before phase one
        build_model(
            settings(weights=weights_file, fine_tune={"epochs": 1, "unfreeze_from": "block_99"}),
            SHAPE,
            3,
        )
    assert "is not a layer of MobileNetV2" in one_line(caught)


@pytest.mark.slow
def test_fit_model_fine_tunes_after_train_epochs_and_resumes_in_phase_two(tmp_path):
    """1 epoch frozen + 2 fine-tuning epochs through the worker's own fit path (no Ray), then
    resumes: from epoch 2 (phase two) with phase two's trainability and its kept optimizer, and
    from epoch 1 (the end of phase one) straight into phase two."""
    from pipeline.data.preprocess import run_preprocess
    from pipeline.settings import TrainRequest
    from pipeline.training.train import train_job
    from pipeline.training.worker import fit_model

    config = compose(
        "model=backbone",
        f"model.weights={write_weights(tmp_path / 'mobilenet_v2_32.h5')}",
        "model.input_size=[32,32]",
        "model.fine_tune.epochs=2",
        "model.fine_tune.unfreeze_from=block_16_expand",
        "train.epochs=1",
        "train.batch_size=16",
        "train.early_stopping.enabled=false",
        "train.reduce_lr.enabled=false",
    )
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    x = (rng.integers(0, 60, size=(90, 8, 8, 1)) + 60 * y[:, None, None, None]).astype(np.uint8)
    processed = tmp_path / "processed"
    pre = dataclasses.replace(config.preprocess, num_shards=1)
    run_preprocess(pre, 0, write_raw(tmp_path / "raw", x, y), processed)
    job = train_job(TrainRequest.from_config(config), processed, tmp_path / "tb")
    checkpoints = {}

    def report(model, logs, epoch, history, callbacks):
        checkpoints[epoch + 1] = (
            save_model(model, history, tmp_path / f"checkpoint-{epoch + 1}", callbacks),
            int(model.optimizer.iterations.numpy()),
            float(model.optimizer.learning_rate.numpy()),
        )

    model, history = fit_model(job, rank=0, world_size=1, report=report)
    assert history["epochs"] == [1, 2, 3]
    assert checkpoints[1][2] == pytest.approx(config.train.learning_rate)
    assert checkpoints[2][2] == pytest.approx(1e-5)  # phase two's rate from epoch 2
    assert find_backbone(model).get_layer("block_16_expand").trainable

    resumed, resumed_history = fit_model(job, rank=0, world_size=1, resume_dir=checkpoints[2][0])
    assert resumed_history["epochs"] == [1, 2, 3]
    network = find_backbone(resumed)
    assert network.get_layer("block_16_expand").trainable
    assert not network.get_layer("block_15_project").trainable
    assert not network.get_layer("block_16_expand_BN").trainable
    assert float(resumed.optimizer.learning_rate.numpy()) == pytest.approx(1e-5)
    # the checkpoint's optimizer went on (its step count), not a fresh one
    assert int(resumed.optimizer.iterations.numpy()) == checkpoints[3][1]

    # from the end of phase one: the resume enters phase two (fresh optimizer at 1e-5) at once
    resumed, resumed_history = fit_model(job, rank=0, world_size=1, resume_dir=checkpoints[1][0])
    assert resumed_history["epochs"] == [1, 2, 3]
    assert find_backbone(resumed).get_layer("block_16_expand").trainable
    assert float(resumed.optimizer.learning_rate.numpy()) == pytest.approx(1e-5)
    assert int(resumed.optimizer.iterations.numpy()) == checkpoints[3][1]
