"""The SavedModel export: raw inputs in, class probabilities and class names out.

The preprocessing the model was trained behind (``meta.json``'s normalisation, fitted on train)
lives inside the graph, so a client sends raw values and never re-implements it. Signatures:

* ``serving_default``: ``inputs`` float32 ``[batch, *input_shape]`` raw feature values (the units
  of the ingested data, e.g. 0..16 for sklearn digits, 0..255 for MNIST) ->
  ``probabilities`` float32 ``[batch, num_classes]``, ``class_names`` string ``[batch, num_classes]``
  (the label of every column) and ``predicted_class`` string ``[batch]``.
* ``serving_images`` (image models only): ``images`` uint8 ``[batch, height, width, channels]`` of
  any height/width, resized (bilinear, antialiased) to the model's size; pixel 255 maps onto the
  largest raw value seen in training, so 0..255 PNGs work for a model trained on 0..16 digits.
  Same outputs as ``serving_default``.
* ``serving_raw_rows`` (CSV sources only): one ``[batch]`` tensor per raw CSV column (float32
  numbers, strings for text columns; NaN / ``""`` = missing), imputed and one-hot encoded in the
  graph exactly as ingest did (:mod:`pipeline.export.raw_rows`). Same outputs as ``serving_default``.
* ``probabilities``: ``serving_default`` with the ``probabilities`` output only; the TFLite and
  TF.js converters start from it (one numeric output, no string tensors).

A regression model (``meta.json`` ``task: regression``) has the same signatures and inputs, but
every one returns ``predictions`` float32 ``[batch]`` (the target, in its own units) and
``predictions`` replaces ``probabilities`` as the converters' signature (:func:`converter_signature`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "serving_images"
PROBABILITIES_SIGNATURE = "probabilities"
INPUT_NAME = "inputs"
IMAGES_INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
PREDICTIONS_SIGNATURE = "predictions"  # a regression model's converter input, and its output name
PREDICTIONS_NAME = "predictions"
MAX_PIXEL = 255.0
# max(x, lowest float32) ends the normalisation: an exact identity for every finite input that keeps the TFLite
# converter from folding ``1 / scale`` into the first layer's weights, so the int8 variant can run the
# normalisation in float before its quantized body (pipeline.export.tflite).
FLOAT_PROLOGUE_END = float(np.finfo(np.float32).min)


def converter_signature(meta: dict) -> str:
    """The signature TFLite and TF.js convert from: ``predictions`` for a regression model, else ``probabilities``."""
    return PREDICTIONS_SIGNATURE if meta.get("task") == "regression" else PROBABILITIES_SIGNATURE


def raw_inputs(x: np.ndarray, normalization: dict) -> np.ndarray:
    """Undo ``meta.json``'s normalisation: the raw values a client would send."""
    offset = np.asarray(normalization["offset"], dtype=np.float64)
    scale = np.asarray(normalization["scale"], dtype=np.float64)
    return (np.asarray(x, dtype=np.float64) * scale + offset).astype(np.float32)


def is_image_shape(input_shape: list[int]) -> bool:
    return len(input_shape) == 3


def _serving_module(model, meta: dict, pixel_to_raw: float, train_means: np.ndarray | None):
    from pipeline.env import import_tensorflow
    from pipeline.export.raw_rows import (
        RAW_ROWS_SIGNATURE,
        has_raw_rows,
        raw_column_names,
        raw_rows_function,
    )

    tf = import_tensorflow()
    input_shape = [int(size) for size in meta["input_shape"]]
    offset = tf.constant(np.asarray(meta["normalization"]["offset"], dtype=np.float32))
    scale = tf.constant(np.asarray(meta["normalization"]["scale"], dtype=np.float32))
    names = tf.constant([str(name) for name in meta["class_names"]])
    module = tf.Module()
    # The signatures need the model's variables, not the Keras model: a tracked Keras model makes
    # tf.saved_model.save trace and store every layer's call functions too (MobileNetV2: 649
    # functions, 28 s to save and 16 s to load back, against 7 s and 3 s with the variables alone).
    module.model_variables = list(model.variables)

    def normalised(raw):  # the float prologue: see FLOAT_PROLOGUE_END
        return tf.maximum((raw - offset) / scale, FLOAT_PROLOGUE_END)

    def probabilities(raw):
        outputs = model(normalised(raw), training=False)
        if outputs.shape[-1] == 1:  # a sigmoid unit: one column per class, as evaluate reports it
            outputs = tf.concat([1.0 - outputs, outputs], axis=-1)
        return outputs

    def labelled(raw):
        probs = probabilities(raw)
        return {
            OUTPUT_NAME: probs,
            "class_names": tf.tile(names[tf.newaxis], [tf.shape(probs)[0], 1]),
            "predicted_class": tf.gather(names, tf.argmax(probs, axis=-1)),
        }

    def predicted(raw):  # a regression model: one value per example, in the target's units
        return {PREDICTIONS_NAME: tf.reshape(model(normalised(raw), training=False), [-1])}

    regression = meta.get("task") == "regression"
    outputs = predicted if regression else labelled  # what every signature returns
    raw_spec = tf.TensorSpec([None, *input_shape], tf.float32, name=INPUT_NAME)
    module.serve = tf.function(outputs, input_signature=[raw_spec])
    if regression:
        module.serve_predictions = tf.function(predicted, input_signature=[raw_spec])
        signatures = {SIGNATURE: module.serve, PREDICTIONS_SIGNATURE: module.serve_predictions}
    else:
        module.serve_probabilities = tf.function(
            lambda inputs: {OUTPUT_NAME: probabilities(inputs)}, input_signature=[raw_spec]
        )
        signatures = {SIGNATURE: module.serve, PROBABILITIES_SIGNATURE: module.serve_probabilities}
    if is_image_shape(input_shape):
        height, width, channels = input_shape

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None, None, channels], tf.uint8, name=IMAGES_INPUT_NAME)
            ]
        )
        def serve_images(images):
            resized = tf.image.resize(tf.cast(images, tf.float32), [height, width], antialias=True)
            return outputs(resized * pixel_to_raw)

        module.serve_images = serve_images
        signatures[IMAGES_SIGNATURE] = serve_images
    if has_raw_rows(meta):
        means = (
            np.zeros(input_shape, np.float32) if train_means is None else np.asarray(train_means)
        )
        module.serve_raw_rows = raw_rows_function(tf, meta, means, outputs)
        module.raw_column_names = tf.Variable(
            raw_column_names(meta), trainable=False
        )  # the CSV header a client sends
        signatures[RAW_ROWS_SIGNATURE] = module.serve_raw_rows
    return module, signatures


def write_saved_model(
    model, meta: dict, pixel_to_raw: float, directory: Path, train_means: np.ndarray | None = None
) -> dict:
    """Save ``model`` behind its preprocessing with the signatures this module documents.

    Args:
        model: The trained Keras model (fed normalised inputs).
        meta: ``data/processed/meta.json`` (``input_shape``, ``class_names``, ``normalization``).
        pixel_to_raw: Factor from a 0..255 pixel to the raw units (used by ``serving_images``).
        directory: Where the SavedModel is written.
        train_means: Every raw feature's train-split mean (``serving_raw_rows``' fill under
            ``data.missing=drop``; zeros when None).

    Returns:
        The signatures by name (``tf.function``s, in memory), for the converters.
    """
    from pipeline.env import import_tensorflow

    tf = import_tensorflow()
    module, signatures = _serving_module(model, meta, pixel_to_raw, train_means)
    try:
        tf.saved_model.save(module, str(directory), signatures=signatures)
    except AssertionError as error:
        # a resource the variables do not cover (a user layer's lookup table): track the whole
        # model, so every resource it owns is saved (slower to save and load)
        if "untracked" not in str(error):
            raise
        module.model = model
        tf.saved_model.save(module, str(directory), signatures=signatures)
    return signatures


def saved_model_predictor(directory: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Load the SavedModel back (as TF Serving would) and call ``serving_default`` on raw inputs."""
    from pipeline.env import import_tensorflow

    tf = import_tensorflow()
    signature = tf.saved_model.load(str(directory)).signatures[SIGNATURE]
    output = PREDICTIONS_NAME if PREDICTIONS_NAME in signature.structured_outputs else OUTPUT_NAME
    return lambda x: signature(**{INPUT_NAME: tf.constant(x, tf.float32)})[output].numpy()
