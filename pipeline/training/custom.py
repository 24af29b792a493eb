"""Users' own Keras models (``model=custom``): a builder named by dotted path, checked as it is built.

``model.builder: "<module>:<function>"`` names a function ``build(input_shape, num_classes, **params)``
that returns an *uncompiled* ``tf.keras.Model`` (Sequential, Functional or subclassed; custom layers
registered with ``tf.keras.utils.register_keras_serializable``); ``model.params`` are its keyword
arguments. Its output must fit the task: ``[n, num_classes]`` softmax for 3+ classes, one sigmoid
unit for 2, one linear unit for regression (``num_classes == 0``; the pipeline rescales it to the
target's units, as for the built-in models). A builder with an ``embeddings`` parameter also gets
preprocess's embedded table features (``meta.json`` ``embeddings``). The pipeline compiles the model
with ``model.loss``, ``train.optimizer`` and ``model.metrics``.

The builder is resolved inside the Ray workers (the driver never imports TensorFlow); evaluate,
export and resume import its module first (:func:`import_model_module`) so its custom objects load.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import numpy as np

from pipeline.errors import UserError
from pipeline.settings import ModelSettings

CONTRACT = "build(input_shape, num_classes, **params) -> uncompiled tf.keras.Model"
REGRESSION = 0


def builder_module(builder: str | None) -> str | None:
    """The module part of ``"<module>:<function>"`` (None without a builder)."""
    return builder.partition(":")[0] if builder else None


def import_model_module(module: str | None) -> None:
    """Import a user model's module (its custom layers register themselves) before a model is loaded.

    Raises:
        UserError: the module cannot be imported, naming it.
    """
    if not module:
        return
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise UserError(
            f"model: cannot import {module} ({error}): put it under user_models/ (or on PYTHONPATH) "
            "or fix model.builder"
        ) from None


def resolve_builder(builder: str) -> Callable:
    """The function ``"<module>:<function>"`` names.

    Raises:
        UserError: the module or the function cannot be found, or it is not callable.
    """
    module_name, _, function = builder.partition(":")
    import_model_module(module_name)
    found = getattr(importlib.import_module(module_name), function, None)
    if not callable(found):
        raise UserError(
            f"model: model.builder={builder}: {module_name} has no function {function}: "
            f"define {function}({CONTRACT.split('(', 1)[1]} there or fix model.builder"
        )
    return found


def builder_arguments(
    function: Callable, builder: str, params: dict, embeddings: list | None
) -> dict:
    """The keyword arguments to call the builder with: ``model.params`` (and ``embeddings`` when it takes them).

    Raises:
        UserError: a signature that cannot take ``(input_shape, num_classes, **params)``.
    """
    signature = inspect.signature(function)
    kwargs = dict(params)
    if "embeddings" in signature.parameters:
        kwargs["embeddings"] = list(embeddings or [])
    try:
        signature.bind((1,), 2, **kwargs)
    except TypeError as error:
        raise UserError(
            f"model: model.builder={builder} has the signature {function.__name__}{signature} ({error}) "
            f"for model.params={dict(params)}: expected {CONTRACT}"
        ) from None
    return kwargs


def expected_output(num_classes: int) -> tuple[int, str]:
    """Units and activation the task needs from the model's output."""
    if num_classes == REGRESSION:
        return 1, "one linear unit (regression)"
    if num_classes == 2:
        return 1, "one sigmoid unit (2 classes)"
    return num_classes, f"{num_classes} softmax units ({num_classes} classes)"


def check_output(builder: str, outputs: np.ndarray, num_classes: int) -> None:
    """A forward pass's ``outputs`` fit the task: shape, and probabilities where the task needs them.

    Raises:
        UserError: naming what came out and what the task needs.
    """
    units, wanted = expected_output(num_classes)
    shape = tuple(outputs.shape)
    if len(shape) != 2 or shape[1] != units:
        raise UserError(
            f"model: model.builder={builder} outputs shape {list(shape)}: the task needs [n, {units}], {wanted}"
        )
    if num_classes == REGRESSION:
        return
    in_range = bool(np.all((outputs >= 0) & (outputs <= 1)))
    sums_to_one = units == 1 or bool(np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3))
    if not (in_range and sums_to_one):
        raise UserError(
            f"model: model.builder={builder} outputs values in [{outputs.min():.3g}, {outputs.max():.3g}]: "
            f"the task needs {wanted} (activation={'sigmoid' if units == 1 else 'softmax'} on the last layer)"
        )


def build_custom(
    settings: ModelSettings, input_shape: tuple[int, ...], num_classes: int, embeddings=None
):
    """Build the user's model and check it on a seeded random batch (subclassed models get built by it)."""
    import tensorflow as tf

    function = resolve_builder(settings.builder)
    kwargs = builder_arguments(function, settings.builder, settings.params, embeddings)
    try:
        model = function(tuple(input_shape), num_classes, **kwargs)
    except UserError:
        raise
    except Exception as error:  # the user's code: one line naming it, not a traceback into our loop
        raise UserError(
            f"model: model.builder={settings.builder} raised {type(error).__name__}: {error}: fix the builder "
            "or model.params"
        ) from None
    if not isinstance(model, tf.keras.Model):
        raise UserError(
            f"model: model.builder={settings.builder} returned {type(model).__name__}: expected {CONTRACT}"
        )
    batch = np.random.default_rng(0).normal(size=(2, *input_shape)).astype(np.float32)
    for spec in embeddings or []:  # category codes must stay valid indices
        batch[..., spec["feature"]] = 1.0
    check_output(
        settings.builder, np.asarray(model(batch, training=False), dtype=np.float64), num_classes
    )
    if model.inputs:
        return model
    # A subclassed model has no symbolic input: wrapped in a functional model, it has the input shape
    # every later step reads (TensorBoard's graph, mixed precision, the regression rescaling, exports).
    inputs = tf.keras.Input(tuple(input_shape))
    return tf.keras.Model(inputs, model(inputs), name=model.name)
