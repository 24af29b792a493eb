"""TFLite variants converted from the SavedModel's ``probabilities`` (regression: ``predictions``) signature, and their interpreter.

Variants (``export.tflite``): ``float32`` (plain conversion), ``dynamic_range`` (int8 weights,
float activations), ``float16`` (float16 weights) and ``int8`` (int8 weights and activations in
the network's body, calibrated on a representative sample of the train split). The input and
output stay float32 so every variant takes the same raw inputs. Every variant converts the
SavedModel's converter signature, traced in memory and frozen once (``TFLiteConverter.from_saved_model``
took ~25 s a variant for MobileNetV2 on the project's 2-core box, loading the SavedModel each time;
the frozen graph ~2 s, with the same ops and outputs); the converters also share one freeze of it
(:func:`pipeline.training.check.tflite_converter`).

``int8`` is selectively quantized (:func:`float_nodes`, the TFLite quantization debugger): the
prologue before the first dense or convolution layer (the in-graph normalisation, embedded
category codes) and the head from the output layer on (softmax or sigmoid, a regression's
rescaling) run in float. Quantizing the raw input per tensor, as full-integer quantization with a
float input does, left a table with features in 0..846 and 0.08..2.4 (Pima) 256 levels over
0..846 for every feature: probabilities off by up to 0.47, 13% of the test classes changed.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.env import import_tensorflow, quiet_native_stderr
from pipeline.errors import UserError
from pipeline.training.check import conversion_failure, tflite_converter

FLOAT_VARIANTS = (
    "float32",
)  # the ones held to export.tolerance; quantized ones to the accuracy gate
TFLITE_DIR = "tflite"
TFLITE_METADATA = (
    f"{TFLITE_DIR}/metadata.json"  # class names and pixel_to_raw, for clients such as predict
)
# dense and convolution ops: int8 keeps what comes before the first and from the last on in float (float_nodes)
AFFINE_OPS = (
    "FULLY_CONNECTED",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "CONV_3D",
    "TRANSPOSE_CONV",
    "BATCH_MATMUL",
)


DEFAULT_TFLITE = "model.tflite"  # the float32 variant keeps the name clients and docs rely on
# examples per interpreter call on a whole split: 16 to 256 ran as fast as batch 1 or up to 2.5x faster
# (int8) on the Fashion-MNIST CNN, 2 cores; larger batches spill the activations out of the cache
TFLITE_BATCH_SIZE = 16
# convolutions whose hybrid (float activations, int8 weights) kernels keep a model at batch 1
HYBRID_CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D", "CONV_3D", "TRANSPOSE_CONV")


def tflite_relative_path(variant: str) -> str:
    """``model.tflite`` for float32 (the default), ``tflite/<variant>.tflite`` for quantized variants."""
    return DEFAULT_TFLITE if variant == "float32" else f"{TFLITE_DIR}/{variant}.tflite"


def _converter(
    frozen,
    variant: str,
    representative: np.ndarray | None,
    allow_select_tf_ops: bool,
):
    tf = import_tensorflow()
    # int8 too keeps the float kernels (its float prologue and head need them)
    converter = tflite_converter(frozen, allow_select_tf_ops)
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        converter.representative_dataset = lambda: (
            [example[np.newaxis]] for example in representative
        )
    return converter


def float_nodes(model_content: bytes) -> list[str]:
    """The output tensor names of the ops the int8 variant keeps in float (the debugger's ``denylisted_nodes``).

    ``model_content`` is the calibrated float model. Kept in float: the prologue, every op before
    the first affine op (dense, convolution): the normalisation (which
    :data:`pipeline.export.saved_model.FLOAT_PROLOGUE_END` keeps out of the first layer's weights)
    and any encoding before the network; and the head, the last affine op (the output layer) and
    every op after it: its int8 range must hold 0, so a regression target far from 0 (the
    converter folds the rescaling into the output layer) would keep few of its 256 levels. A
    model with a single affine op keeps it quantized, else nothing would be.
    """
    tf = import_tensorflow()
    no_delegates = (
        tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )  # XNNPACK adds DELEGATE nodes
    interpreter = _interpreter(
        model_content=model_content, experimental_op_resolver_type=no_delegates
    )
    ops = (
        interpreter._get_ops_details()
    )  # no public op list in TF 2.19; QuantizationDebugger reads the same
    affine = [index for index, op in enumerate(ops) if op["op_name"] in AFFINE_OPS]
    if not affine:
        return []
    head = affine[-1] if len(affine) > 1 else affine[-1] + 1
    names = {detail["index"]: detail["name"] for detail in interpreter.get_tensor_details()}
    return [names[index] for op in ops[: affine[0]] + ops[head:] for index in op["outputs"]]


def _quantized_body(converter) -> bytes:
    """The int8 flatbuffer: calibrated on the converter's representative dataset, then quantized by the TFLite
    quantization debugger with :func:`float_nodes` denylisted (float input and output, per-channel weights)."""
    tf = import_tensorflow()
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter)
    float_ops = float_nodes(debugger.calibrated_model)
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=float_ops)
    return debugger.get_nondebug_quantized_model()


def write_tflite(
    frozen,
    path: Path,
    variant: str,
    representative: np.ndarray | None = None,
    allow_select_tf_ops: bool = False,
) -> None:
    """Convert the SavedModel's converter signature, frozen, to one TFLite variant.

    Args:
        frozen: The signature TFLite converts (``probabilities``, a regression model's ``predictions``:
            :func:`pipeline.export.saved_model.converter_signature`) as a concrete function
            frozen by :func:`pipeline.training.check.frozen_graph`.
        path: The ``.tflite`` file to write.
        variant: One of :data:`TFLITE_VARIANTS`.
        representative: Raw train inputs to calibrate ``int8`` activations on.
        allow_select_tf_ops: Let ops TFLite lacks run as TensorFlow ops (the Flex delegate).

    Raises:
        UserError: an op TFLite cannot convert (naming it and ``export.allow_select_tf_ops``), or
            any other conversion failure.
    """
    converter = _converter(frozen, variant, representative, allow_select_tf_ops)
    try:
        with _quiet_interpreters(), warnings.catch_warnings():
            # the input stays float32 by design (no input statistics); the debugger behind int8 runs
            # interpreters of its own
            warnings.filterwarnings(
                "ignore", message="Statistics for quantized inputs were expected"
            )
            flatbuffer = _quantized_body(converter) if variant == "int8" else converter.convert()
    except Exception as error:  # the converter raises ConverterError and plain Exceptions alike
        op, first = conversion_failure(error)
        if op and not allow_select_tf_ops:
            raise UserError(
                f"export: TFLite ({variant}) cannot convert the op {op}: set export.allow_select_tf_ops=true "
                "to run it as a TensorFlow op (Flex delegate), or drop the variant from export.tflite"
            ) from None
        raise UserError(
            f"export: TFLite ({variant}) conversion failed: {first}: drop '{variant}' from export.tflite "
            "to skip it"
        ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)


@contextlib.contextmanager
def _quiet_interpreters():
    """Native stderr quiet, no warning that ``tf.lite.Interpreter`` is deprecated (LiteRT is not in TF 2.19's set)."""
    with quiet_native_stderr(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        yield


def _interpreter(**arguments):
    """``tf.lite.Interpreter(**arguments)``, quietly."""
    tf = import_tensorflow()
    with _quiet_interpreters():
        return tf.lite.Interpreter(**arguments)


def load_interpreter(path: Path):
    """A ready ``tf.lite.Interpreter`` for ``path`` (raises ValueError on a file that is not TFLite)."""
    interpreter = _interpreter(model_path=str(path))
    with quiet_native_stderr():
        interpreter.allocate_tensors()  # the XNNPACK delegate announces itself here
    return interpreter


def has_hybrid_convolution(path: Path) -> bool:
    """Whether a convolution in ``path`` takes float activations with int8 weights (a dynamic-range CNN's hybrid kernels).

    Such a model stays at batch 1: resizing its batch after the first ``allocate_tensors`` crashed
    TF 2.19's interpreter with SIGSEGV (measured 2026-12-02 on the default CNN, 8x8 inputs, batch 256
    and 360: dynamic_range only; the dynamic-range MLP, whose hybrid ops are all dense, and the
    float32, float16 and int8 CNNs ran batched with outputs equal to batch 1). A fresh interpreter
    resized before its first allocation did run that CNN batched, but a crash that depends on the
    order of calls is not one to build on. Read from the op list before allocation (the private
    ``_get_ops_details``, as :func:`float_nodes`), so it costs a model load and no run.
    """
    interpreter = _interpreter(model_path=str(path))
    dtypes = {detail["index"]: detail["dtype"] for detail in interpreter.get_tensor_details()}

    def hybrid(op: dict) -> bool:
        inputs = [index for index in op["inputs"] if index >= 0]
        return (
            op["op_name"] in HYBRID_CONVOLUTIONS
            and len(inputs) >= 2
            and dtypes.get(inputs[0]) == np.float32
            and dtypes.get(inputs[1]) in (np.int8, np.uint8)
        )

    return any(hybrid(op) for op in interpreter._get_ops_details())


def _resized(path: Path, batch_size: int):
    """A fresh interpreter for ``path`` whose batch dimension is ``batch_size``, resized before its first allocation."""
    interpreter = _interpreter(model_path=str(path))
    (input_detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(input_detail["index"], [batch_size, *input_detail["shape"][1:]])
    with quiet_native_stderr():
        interpreter.allocate_tensors()
    return interpreter


def _invoke_in_batches(interpreter, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Outputs of ``interpreter`` (batch dimension ``batch_size``) on ``x``; the last batch is padded with zeros."""
    (input_detail,) = interpreter.get_input_details()
    (output_detail,) = interpreter.get_output_details()
    outputs = []
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        count = len(chunk)
        if count < batch_size:  # a fixed shape: no resize (and re-allocation) per call
            chunk = np.concatenate([chunk, np.zeros((batch_size - count, *x.shape[1:]), x.dtype)])
        interpreter.set_tensor(input_detail["index"], chunk)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_detail["index"])[:count].copy())
    return (
        np.concatenate(outputs)
        if outputs
        else np.zeros((0, *output_detail["shape"][1:]), np.float32)
    )


def tflite_predictor(
    path: Path, batch_size: int = TFLITE_BATCH_SIZE
) -> Callable[[np.ndarray], np.ndarray]:
    """Run the flatbuffer with the TFLite interpreter: ``batch_size`` examples per call, a single example at batch 1.

    Batch 1 is how on-device clients run it, so one example (latency) always runs on a batch-1
    interpreter; a model with hybrid convolutions (:func:`has_hybrid_convolution`, the
    dynamic-range CNN) runs every example at batch 1. The returned function's ``batch_size``
    attribute says which batch a whole split runs at.
    """
    single = load_interpreter(path)
    (input_detail,) = single.get_input_details()
    if int(input_detail["shape"][0]) != 1:
        single.resize_tensor_input(input_detail["index"], [1, *input_detail["shape"][1:]])
        single.allocate_tensors()
    batch = 1 if batch_size <= 1 or has_hybrid_convolution(path) else int(batch_size)
    batched = []  # the batch-``batch`` interpreter, built at the first call that needs it

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if batch == 1 or len(x) <= 1:
            return _invoke_in_batches(single, x, 1)
        if not batched:
            batched.append(_resized(path, batch))
        return _invoke_in_batches(batched[0], x, batch)

    predict.batch_size = batch
    return predict
