"""Models for the evaluate/export tests: fitted in-process (no Ray) and saved as the train stage does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)


def fit_and_save(config, epochs: int):
    """A model of ``config.model`` fitted in-process (no Ray) on the train split and saved as the
    train stage does (``paths.models``), built from ``meta.json`` as the workers do; returns it."""
    from pipeline.data.shards import load_split
    from pipeline.env import import_tensorflow
    from pipeline.training.model_io import save_model
    from pipeline.training.models import build_model, compile_model

    tf = import_tensorflow()
    tf.keras.utils.set_random_seed(0)
    x, y = load_split(Path(config.paths.processed), "train")
    meta = json.loads((Path(config.paths.processed) / "meta.json").read_text())
    num_classes = len(meta["class_names"])
    model = build_model(
        config.model, x.shape[1:], num_classes, meta.get("embeddings"), target=meta.get("target")
    )
    model = compile_model(model, config.model, config.train, num_classes)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    save_model(model, {"loss": [0.0]}, Path(config.paths.models))
    return model


def saved_model_cli_show(directory: Path) -> str:
    """``saved_model_cli show --all`` of a SavedModel, asserted to succeed."""
    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    return shown.stdout


def batch_norm_conv_net():
    """Every pattern the converter folds: Conv2D without and with a bias, depthwise x2, each + BN."""
    from pipeline.env import import_tensorflow

    tf = import_tensorflow()
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((12, 12, 3))
    x = tf.keras.layers.Conv2D(8, 3, use_bias=False)(inputs)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.Conv2D(6, 3, use_bias=True)(tf.keras.layers.ReLU()(x))
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False)(x)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(4, activation="softmax")(x))
    for layer in model.layers:  # moving statistics and affine parameters that are not 0 and 1
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            rng = np.random.default_rng(1)
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape) for w in layer.get_weights()])
    return model
