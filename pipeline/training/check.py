"""Check a model before any cluster time is spent: build, one batch, save and reload, float32 TFLite,
and TF.js's op list.

``kp-check-model`` runs :func:`check_model`; the train stage runs it too (in a child process, so its
driver stays free of TensorFlow) for a user's model (``model=custom``) and a backbone
(``model=backbone``) before any Ray worker starts. Every failure is one line naming the culprit and
the fix: a builder that cannot be imported, a wrong signature, a wrong output for the task, a layer
that cannot be saved and reloaded, an op TFLite or TF.js cannot run, an unknown backbone, weights
that do not fit it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import re
import tempfile
import weakref
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.io import read_json
from pipeline.settings import ModelSettings, TrainSettings

logger = logging.getLogger(__name__)

# frozen function -> what a TFLite converter's freeze of it returned (:func:`tflite_converter`)
_CONVERTER_FREEZES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def conversion_failure(error: Exception) -> tuple[str | None, str]:
    """What a TFLite converter error says: the TensorFlow op it names as unsupported (if any) and its
    first line (the converter raises ConverterError and plain Exceptions alike)."""
    message = str(error).strip()
    first = message.splitlines()[0] if message else type(error).__name__
    return unsupported_op(message), first


def unsupported_op(message: str) -> str | None:
    """The first TensorFlow op a converter error names as unsupported, if any."""
    if not any(
        sign in message
        for sign in ("not supported", "failed to legalize", "neither a custom op nor a flex op")
    ):
        return None
    found = re.search(r"'(tf\.\w+)'", message) or re.search(r"\b(tf\.\w+)\b", message)
    return found.group(1) if found else None


def _one_batch(meta: dict, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A seeded batch shaped like the data (category codes kept valid, labels of every class)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(size, *meta["input_shape"])).astype(np.float32)
    for spec in meta.get("embeddings") or []:
        x[..., spec["feature"]] = 1.0
    classes = len(meta["class_names"])
    y = rng.normal(size=size).astype(np.float32) if not classes else np.arange(size) % classes
    return x, y


@contextlib.contextmanager
def _graph_optimizer_off(tf):
    """TensorFlow's graph optimizer (Grappler) off for the functions first run inside, then back
    as it was. The check runs its train step once: optimizing it cost MobileNetV2's one step ~4 of
    its ~10 s (docs/benchmarks.md#one-trace-of-the-train-step), and changes no result."""
    before = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": before.get("disable_meta_optimizer", False)}
        )


def _save_and_reload(model, directory: Path, module: str | None):
    """The model through ``model.keras`` and back, as evaluate and export will load it."""
    from pipeline.training.custom import import_model_module
    from pipeline.training.model_io import MODEL_FILE, load_keras_model, save_model

    try:
        save_model(model, {}, directory)
        import_model_module(module)
        return load_keras_model(directory / MODEL_FILE)
    except UserError:
        raise
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"model: the model cannot be saved and reloaded ({type(error).__name__}: {first[:300]}): register "
            "every custom layer and model with @tf.keras.utils.register_keras_serializable() and give it "
            "get_config() returning its constructor arguments"
        ) from None


def _inference_function(model, input_shape: list[int]):
    """The model's inference graph for a batch of any size, as the exports trace it."""
    import tensorflow as tf

    function = tf.function(lambda x: model(x, training=False))
    return function.get_concrete_function(tf.TensorSpec([None, *input_shape], tf.float32))


def frozen_graph(concrete):
    """``concrete`` with its variables as constants, ready for :func:`tflite_converter` (once for every variant).

    Control flow stays as it is (TFLite runs control flow v2), as the converter freezes a function itself.
    """
    from tensorflow.python.framework import convert_to_constants

    from pipeline.env import quiet_native_stderr

    with quiet_native_stderr():  # Grappler's C++ notes
        return convert_to_constants.convert_variables_to_constants_v2(
            concrete, lower_control_flow=False
        )


def tflite_converter(frozen, allow_select_tf_ops: bool):
    """A float32 TFLite converter of ``frozen`` (:func:`frozen_graph`): TFLite's built-in ops, plus
    TensorFlow ops (the Flex delegate) with ``allow_select_tf_ops``.

    From the frozen graph, not from the function with its Keras model: given a Keras model, the
    converter saves and reloads a SavedModel of it, tracing every layer's call functions (MobileNetV2:
    ~30 s on the project's 2-core box, against ~2 s for the frozen graph, same ops and outputs).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
        [tf.lite.OpsSet.SELECT_TF_OPS] if allow_select_tf_ops else []
    )
    _freeze_once(converter, frozen)
    return converter


def _freeze_once(converter, frozen) -> None:
    """Every converter of ``frozen`` reuses the first one's freeze of it.

    ``TFLiteConverter.convert`` freezes its function again although ``frozen`` has no variables
    left: it re-imports the whole graph into a new function, about half of each conversion
    (MobileNetV2: 0.63 of ~1.3 CPU s; export converts 4 variants, int8 more than once). The freeze
    returns the graph, its inputs and outputs and the new function, which the conversion only
    reads. Relies on tf.lite's private ``_freeze_concrete_function`` (TF 2.19);
    tests/export/test_tflite.py checks the flatbuffers are the same bytes.
    """
    freeze = converter._freeze_concrete_function

    def cached():
        if frozen not in _CONVERTER_FREEZES:
            _CONVERTER_FREEZES[frozen] = freeze()
        return _CONVERTER_FREEZES[frozen]

    converter._freeze_concrete_function = cached


def _float32_tflite(concrete, allow_select_tf_ops: bool) -> int:
    """Convert the model to float32 TFLite as export will; return the flatbuffer's size."""
    from pipeline.env import quiet_native_stderr

    converter = tflite_converter(frozen_graph(concrete), allow_select_tf_ops)
    try:
        with quiet_native_stderr():
            return len(converter.convert())
    except Exception as error:
        op, first = conversion_failure(error)
        if op and not allow_select_tf_ops:
            raise UserError(
                f"model: TFLite cannot run the op {op}: set export.allow_select_tf_ops=true (Flex delegate) "
                "or build the model without it"
            ) from None
        raise UserError(
            f"model: the model does not convert to TFLite ({first[:300]}): fix the model"
        ) from None


def unsupported_tfjs_ops(concrete) -> list[str]:
    """The ops of ``concrete``'s graph that TF.js cannot run, by the converter's own op list.

    ``tensorflowjs_converter`` freezes the graph and refuses it (``ValueError: Unsupported Ops in
    the model before optimization``) when ``validate`` finds ops outside the TF.js runtime's op
    list. This runs that same freezing and ``validate`` on the graph the TFLite check converts,
    without the converter's graph optimisation, batch-norm folding and weight writing (~25 s for
    MobileNetV2 at 96x96 on the project's 2-core box, against ~0.6 s for this, import included);
    the export stage still runs the whole converter.
    """
    from tensorflow.python.framework import convert_to_constants

    from pipeline.env import quiet_native_stderr

    os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")  # TF-DF, imported by tensorflowjs
    with quiet_native_stderr():  # the import's and Grappler's (freezing) C++ notes
        from tensorflowjs.converters import tf_saved_model_conversion_v2 as converter

        frozen = convert_to_constants.convert_variables_to_constants_v2(
            concrete,
            lower_control_flow=True,
            aggressive_inlining=True,  # as the converter freezes
        )
    graph = frozen.graph.as_graph_def()
    return sorted(converter.validate(graph, skip_op_check=False, strip_debug_ops=False))


def _check_tfjs_ops(concrete) -> None:
    ops = unsupported_tfjs_ops(concrete)
    if ops:
        names = ", ".join(ops)
        raise UserError(
            f"model: TF.js cannot run the op{'s' if len(ops) > 1 else ''} {names} (not in "
            "tensorflowjs's op list): set export.tfjs=false to export without TF.js, or build the "
            "model without it"
        )


def check_model(
    model: ModelSettings,
    train: TrainSettings,
    processed_dir: Path,
    allow_select_tf_ops: bool = False,
    tfjs: bool = False,
) -> dict:
    """Build the model from ``meta.json``'s input shape and classes, train one batch, save and reload it
    (same predictions), convert it to float32 TFLite and, with ``tfjs`` (``export.tfjs``), check its
    ops against TF.js's. Writes nothing that outlives the call.

    Returns:
        What was checked: ``parameters``, ``output_shape``, ``tflite_bytes``, ``tfjs_checked``.

    Raises:
        UserError: one line naming the culprit and the fix.
    """
    from pipeline.env import import_tensorflow, quiet_tensorflow_loggers
    from pipeline.training.custom import builder_module
    from pipeline.training.models import build_model, compile_model

    meta_path = Path(processed_dir) / "meta.json"
    if not meta_path.is_file():
        raise UserError(
            f"check-model: {meta_path} is missing: run the preprocess stage first (dvc repro preprocess)"
        )
    meta = read_json(meta_path)
    tf = import_tensorflow()
    quiet_tensorflow_loggers()
    tf.keras.utils.set_random_seed(0)
    classes = len(meta["class_names"])
    built = build_model(
        model,
        tuple(meta["input_shape"]),
        classes,
        meta.get("embeddings"),
        target=meta.get("target"),
    )
    one_step = dataclasses.replace(train, steps_per_execution=1)  # train_on_batch runs one step
    built = compile_model(built, model, one_step, classes)
    x, y = _one_batch(meta)
    with _graph_optimizer_off(tf):
        built.train_on_batch(x, y)
    # Called directly, not through predict(): predict traces a function of its own for one batch
    # (~2 s for MobileNetV2); the graph the exports run is traced below (_inference_function).
    expected = np.asarray(built(x, training=False))
    with tempfile.TemporaryDirectory(prefix="check-model-") as scratch:
        reloaded = _save_and_reload(built, Path(scratch), builder_module(model.builder))
    if not np.allclose(np.asarray(reloaded(x, training=False)), expected, atol=1e-5):
        raise UserError(
            "model: the reloaded model predicts differently from the trained one: a custom layer's get_config() "
            "misses a constructor argument or its weights are not tracked"
        )
    concrete = _inference_function(built, list(meta["input_shape"]))
    if tfjs:  # ~1 s: before the TFLite conversion, which takes tens of seconds for a backbone
        _check_tfjs_ops(concrete)
    size = _float32_tflite(concrete, allow_select_tf_ops)
    result = {
        "parameters": int(built.count_params()),
        "output_shape": list(expected.shape[1:]),
        "tflite_bytes": size,
        "tfjs_checked": tfjs,
    }
    logger.info(
        "Model check passed: %s parameters, output %s, float32 TFLite %d bytes%s",
        f"{result['parameters']:,}",
        result["output_shape"],
        size,
        ", every op in TF.js's list" if tfjs else "",
    )
    return result


def _check_in_child(arguments: tuple, results) -> None:
    from pipeline.env import configure_process_env

    configure_process_env()
    try:
        results.put(("ok", check_model(*arguments)))
    except UserError as error:
        results.put(("error", str(error)))
    except Exception as error:  # our own bug: carried back whole
        results.put(("crash", f"{type(error).__name__}: {error}"))


def check_model_in_child(
    model: ModelSettings,
    train: TrainSettings,
    processed_dir: Path,
    allow_select_tf_ops: bool = False,
    tfjs: bool = False,
) -> dict:
    """:func:`check_model` in a fresh spawned process, so the caller never imports TensorFlow.

    Raises:
        UserError: the check's one line.
    """
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(
        target=_check_in_child,
        args=((model, train, Path(processed_dir), allow_select_tf_ops, tfjs), results),
    )
    child.start()
    status, value = results.get()
    child.join()
    if status == "error":
        raise UserError(value)
    if status == "crash":
        raise RuntimeError(f"the model check crashed: {value}")
    return value
