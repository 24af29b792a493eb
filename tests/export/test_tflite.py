"""TFLite conversion errors: an op TFLite lacks names itself and the export.allow_select_tf_ops switch; the int8
variant's float prologue and head keep features of very different ranges and a target far from 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.export.tflite import tflite_predictor, write_tflite
from pipeline.training.check import frozen_graph, unsupported_op


@pytest.fixture(scope="module")
def determinant_function():
    """A frozen ``probabilities`` function that uses tf.linalg.det (MatrixDeterminant: no TFLite builtin)."""
    import tensorflow as tf

    serve = tf.function(
        lambda inputs: {"probabilities": tf.linalg.det(tf.reshape(inputs, [-1, 2, 2]))[:, None]},
        input_signature=[tf.TensorSpec([None, 4], tf.float32, name="inputs")],
    )
    return frozen_graph(serve.get_concrete_function())


def test_an_unconvertible_op_is_one_line_naming_the_switch(determinant_function, tmp_path):
    with pytest.raises(
        UserError,
        match=r"cannot convert the op tf.MatrixDeterminant: set export.allow_select_tf_ops=true",
    ) as caught:
        write_tflite(determinant_function, tmp_path / "m.tflite", "float32")
    assert "\n" not in str(caught.value) and not (tmp_path / "m.tflite").exists()


def test_select_tf_ops_convert_and_run_it(determinant_function, tmp_path):
    write_tflite(determinant_function, tmp_path / "m.tflite", "float32", allow_select_tf_ops=True)
    x = np.array([[1, 2, 3, 4], [2, 0, 0, 2]], dtype=np.float32)
    assert np.allclose(tflite_predictor(tmp_path / "m.tflite")(x)[:, 0], [-2.0, 4.0], atol=1e-4)


def test_unsupported_op_parsing():
    assert (
        unsupported_op("error: 'tf.BesselI1e' op is neither a custom op nor a flex op")
        == "tf.BesselI1e"
    )
    assert (
        unsupported_op(
            'Some ops are not supported by the native TFLite runtime ... tf.Foo {device = ""}'
        )
        == "tf.Foo"
    )
    assert unsupported_op("Could not translate MLIR to FlatBuffer") is None


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "export.tflite=[float32,int4]",
            "export.tflite='int4' is invalid: expected one of float32, dynamic_range, float16, int8",
        ),
        (
            "export.tflite=[int8,int8]",
            "export.tflite=['int8', 'int8'] is invalid: expected each variant at most once",
        ),
        (
            "export.tfjs_quantization=int4",
            "export.tfjs_quantization='int4' is invalid: expected one of none, float16, uint8",
        ),
        ("export.calibration_examples=0", "export.calibration_examples=0 is invalid"),
        (
            "gate.min_accuracy=1.5",
            "gate.min_accuracy=1.5 is invalid: expected an accuracy in [0, 1]",
        ),
        ("gate.max_accuracy_regression=-0.1", "gate.max_accuracy_regression=-0.1 is invalid"),
    ],
)
def test_export_and_gate_settings_are_validated(override, expected):
    import re

    from helpers.config import compose

    with pytest.raises(UserError, match=re.escape(expected)):
        compose(override)
    assert compose("export.tflite=[]", "export.max_accuracy_drop=-1").export.tflite == []


VARIANTS = ("float32", "dynamic_range", "float16", "int8")


@pytest.fixture(scope="module")
def tiny_variants(tmp_path_factory):
    """The shipped CNN and MLP on 8x8x1 inputs, untrained, each converted to every variant:
    ``({(model, variant): path}, raw inputs, {model: Keras outputs})``."""
    import tensorflow as tf

    from helpers.config import compose
    from pipeline.export.saved_model import write_saved_model
    from pipeline.training.models import build_model

    root = tmp_path_factory.mktemp("variants")
    meta = {
        "input_shape": [8, 8, 1],
        "class_names": list("abcdefghij"),
        "normalization": {"method": "minmax", "offset": 0.0, "scale": 16.0},
    }
    raw = np.random.default_rng(0).uniform(0, 16, size=(360, 8, 8, 1)).astype(np.float32)
    paths, expected = {}, {}
    for name in ("cnn", "mlp"):
        tf.keras.utils.set_random_seed(0)
        model = build_model(compose(f"model={name}").model, (8, 8, 1), 10)
        expected[name] = model.predict(raw / 16, verbose=0)
        signatures = write_saved_model(model, meta, 16 / 255, root / name / "saved_model")
        frozen = frozen_graph(signatures["probabilities"].get_concrete_function())
        for variant in VARIANTS:
            paths[name, variant] = root / name / f"{variant}.tflite"
            write_tflite(frozen, paths[name, variant], variant, representative=raw[:50])
    return paths, raw, expected


def test_quantized_cnn_variants_run_on_a_batch(tiny_variants):
    """The shipped CNN's dynamic-range kernels crashed the interpreter (SIGSEGV) when its batch was resized to
    the test split's size; that variant runs batch 1, as devices do, the others in batches."""
    paths, raw, expected = tiny_variants
    for variant in ("dynamic_range", "int8"):
        outputs = tflite_predictor(paths["cnn", variant])(raw)
        assert outputs.shape == (360, 10) and np.abs(outputs - expected["cnn"]).max() < 0.1, variant


@pytest.mark.parametrize("model", ["cnn", "mlp"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_outputs_equal_batch_1(tiny_variants, model, variant):
    """A whole split runs TFLITE_BATCH_SIZE examples per call (a padded last batch: 360 = 22 x 16 + 8) and gives
    the batch-1 outputs; only hybrid convolutions (the dynamic-range CNN) keep batch 1 throughout."""
    from pipeline.export.tflite import TFLITE_BATCH_SIZE, has_hybrid_convolution

    paths, raw, _ = tiny_variants
    path = paths[model, variant]
    hybrid = model == "cnn" and variant == "dynamic_range"
    assert has_hybrid_convolution(path) == hybrid
    predict = tflite_predictor(path)
    assert predict.batch_size == (1 if hybrid else TFLITE_BATCH_SIZE)
    one_at_a_time = tflite_predictor(path, batch_size=1)
    assert one_at_a_time.batch_size == 1
    expected = one_at_a_time(raw)
    np.testing.assert_allclose(predict(raw), expected, rtol=0, atol=1e-6)
    for count in (0, 1, 3):  # empty, the latency's single example, fewer than a batch
        np.testing.assert_allclose(predict(raw[:count]), expected[:count], rtol=0, atol=1e-6)


def _dense_model(hidden: tuple[list, list], output: tuple[list, list], activation: str | None):
    """input -> Dense(relu) -> Dense(1, ``activation``) with these (kernel, bias) pairs: a trained model, at once."""
    import tensorflow as tf

    kernel = np.asarray(hidden[0], np.float32)
    layers = [
        tf.keras.layers.Dense(kernel.shape[1], activation="relu"),
        tf.keras.layers.Dense(1, activation=activation),
    ]
    model = tf.keras.Sequential([tf.keras.Input((kernel.shape[0],)), *layers])
    for layer, (weights, bias) in zip(layers, (hidden, output), strict=False):
        layer.set_weights([np.asarray(weights, np.float32), np.asarray(bias, np.float32)])
    return model


def _int8_outputs(
    tmp_path: Path, model, raw: np.ndarray, meta: dict
) -> tuple[np.ndarray, np.ndarray]:
    """The int8 variant's outputs on ``raw`` (calibrated on it) and the model's on the normalised ``raw``."""
    from pipeline.export.saved_model import converter_signature, write_saved_model
    from pipeline.export.tflite import load_interpreter

    signatures = write_saved_model(model, meta, 1.0, tmp_path / "saved_model")
    path = tmp_path / "int8.tflite"
    frozen = frozen_graph(signatures[converter_signature(meta)].get_concrete_function())
    write_tflite(frozen, path, "int8", representative=raw[:200])
    dtypes = {detail["dtype"] for detail in load_interpreter(path).get_tensor_details()}
    assert np.int8 in dtypes, "the body is quantized"
    normalization = meta["normalization"]
    expected = model.predict((raw - normalization["offset"]) / normalization["scale"], verbose=0)
    return tflite_predictor(path)(raw), expected


def _minmax(raw: np.ndarray) -> dict:
    return {
        "method": "minmax",
        "offset": raw.min(axis=0).tolist(),
        "scale": np.ptp(raw, axis=0).tolist(),
    }


def test_int8_keeps_features_of_very_different_ranges(tmp_path):
    """One feature in 0..1000 next to one in 0..1 (Pima: 0..846 next to 0.08..2.4). Quantizing the raw input per
    tensor gave the small one 256 levels of 0..1000, i.e. almost none; int8 normalises in float first."""
    raw = np.random.default_rng(0).uniform([0, 0], [1000, 1], size=(400, 2)).astype(np.float32)
    model = _dense_model(
        ([[4, -4, 0, 0], [0, 0, 6, -6]], [-2, 2, -3, 3]), ([[2], [-2], [2], [-2]], [0]), "sigmoid"
    )
    meta = {"input_shape": [2], "class_names": ["no", "yes"], "normalization": _minmax(raw)}
    outputs, expected = _int8_outputs(tmp_path, model, raw, meta)
    assert np.ptp(expected) > 0.9, "both features move the probability"
    assert np.abs(outputs[:, 1] - expected[:, 0]).max() <= 0.05


def test_int8_regression_keeps_a_target_far_from_zero(tmp_path):
    """The output layer (with the target rescaling the converter folds into it) stays float: an int8 range must hold
    0, so predictions around 5000 with a std of 5 would keep steps of ~20 (4 std)."""
    import tensorflow as tf

    raw = np.random.default_rng(1).uniform([0, 0], [1000, 1], size=(400, 2)).astype(np.float32)
    body = _dense_model(
        ([[4, -4, 0, 0], [0, 0, 6, -6]], [-2, 2, -3, 3]), ([[1], [-1], [1], [-1]], [0]), None
    )
    model = tf.keras.Model(
        body.inputs, tf.keras.layers.Rescaling(5.0, offset=5000.0)(body.outputs[0])
    )
    meta = {
        "input_shape": [2],
        "class_names": [],
        "task": "regression",
        "normalization": _minmax(raw),
    }
    outputs, expected = _int8_outputs(tmp_path, model, raw, meta)
    assert np.ptp(expected) > 10, "both features move the prediction"
    assert np.abs(outputs - expected[:, 0]).max() <= 0.5  # a tenth of the target's std


def test_converters_of_one_frozen_function_freeze_it_once_and_write_the_same_bytes(
    tmp_path, monkeypatch
):
    """``tflite_converter`` reuses the first converter's freeze of the function (check._freeze_once):
    every variant, int8's calibration included, is byte for byte what a converter freezing the
    function again writes."""
    import tensorflow as tf
    from tensorflow.lite.python import lite

    from helpers.config import compose
    from pipeline.export.saved_model import write_saved_model
    from pipeline.training import check
    from pipeline.training.models import build_model

    meta = {
        "input_shape": [8, 8, 1],
        "class_names": list("abc"),
        "normalization": {"method": "minmax", "offset": 0.0, "scale": 16.0},
    }
    raw = np.random.default_rng(1).uniform(0, 16, size=(20, 8, 8, 1)).astype(np.float32)
    tf.keras.utils.set_random_seed(0)
    model = build_model(compose("model=mlp").model, (8, 8, 1), 3)
    signatures = write_saved_model(model, meta, 16 / 255, tmp_path / "saved_model")
    freeze = lite._convert_to_constants.convert_variables_to_constants_v2_as_graph
    freezes = []

    def counted(*args, **kwargs):
        freezes.append(1)
        return freeze(*args, **kwargs)

    monkeypatch.setattr(
        lite._convert_to_constants, "convert_variables_to_constants_v2_as_graph", counted
    )

    def convert_all(directory: Path) -> dict[str, bytes]:
        frozen = frozen_graph(signatures["probabilities"].get_concrete_function())
        for variant in VARIANTS:
            write_tflite(frozen, directory / f"{variant}.tflite", variant, representative=raw)
        return {variant: (directory / f"{variant}.tflite").read_bytes() for variant in VARIANTS}

    once = convert_all(tmp_path / "once")
    assert len(freezes) == 1
    freezes.clear()
    monkeypatch.setattr(check, "_freeze_once", lambda converter, frozen: None)
    again = convert_all(tmp_path / "again")
    assert len(freezes) >= len(VARIANTS)
    assert once == again
