"""TFLite conversion errors: an op TFLite lacks names itself and the export.allow_select_tf_ops switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.export_tflite import tflite_predictor, unsupported_op, write_tflite


@pytest.fixture(scope="module")
def determinant_saved_model(tmp_path_factory):
    """A SavedModel whose ``probabilities`` signature uses tf.linalg.det (MatrixDeterminant: no TFLite builtin)."""
    import tensorflow as tf

    module = tf.Module()
    module.serve = tf.function(lambda inputs: {"probabilities": tf.linalg.det(tf.reshape(inputs, [-1, 2, 2]))[:, None]},
                               input_signature=[tf.TensorSpec([None, 4], tf.float32, name="inputs")])
    directory = tmp_path_factory.mktemp("det") / "saved_model"
    tf.saved_model.save(module, str(directory), signatures={"probabilities": module.serve})
    return directory


def test_an_unconvertible_op_is_one_line_naming_the_switch(determinant_saved_model, tmp_path):
    with pytest.raises(UserError, match=r"cannot convert the op tf.MatrixDeterminant: set export.allow_select_tf_ops=true") as caught:
        write_tflite(determinant_saved_model, tmp_path / "m.tflite", "float32")
    assert "\n" not in str(caught.value) and not (tmp_path / "m.tflite").exists()


def test_select_tf_ops_convert_and_run_it(determinant_saved_model, tmp_path):
    write_tflite(determinant_saved_model, tmp_path / "m.tflite", "float32", allow_select_tf_ops=True)
    x = np.array([[1, 2, 3, 4], [2, 0, 0, 2]], dtype=np.float32)
    assert np.allclose(tflite_predictor(tmp_path / "m.tflite")(x)[:, 0], [-2.0, 4.0], atol=1e-4)


def test_unsupported_op_parsing():
    assert unsupported_op("error: 'tf.BesselI1e' op is neither a custom op nor a flex op") == "tf.BesselI1e"
    assert unsupported_op("Some ops are not supported by the native TFLite runtime ... tf.Foo {device = \"\"}") == "tf.Foo"
    assert unsupported_op("Could not translate MLIR to FlatBuffer") is None


@pytest.mark.parametrize("override, expected", [
    ("export.tflite=[float32,int4]", "export.tflite='int4' is invalid: expected one of float32, dynamic_range, float16, int8"),
    ("export.tflite=[int8,int8]", "export.tflite=['int8', 'int8'] is invalid: expected each variant at most once"),
    ("export.tfjs_quantization=int4", "export.tfjs_quantization='int4' is invalid: expected one of none, float16, uint8"),
    ("export.calibration_examples=0", "export.calibration_examples=0 is invalid"),
    ("evaluate.min_accuracy=1.5", "evaluate.min_accuracy=1.5 is invalid: expected an accuracy in [0, 1]"),
    ("evaluate.max_accuracy_regression=-0.1", "evaluate.max_accuracy_regression=-0.1 is invalid"),
])
def test_export_and_gate_settings_are_validated(override, expected):
    import re

    from conftest import compose

    with pytest.raises(UserError, match=re.escape(expected)):
        compose(override)
    assert compose("export.tflite=[]", "export.max_accuracy_drop=-1").export.tflite == []


def test_quantized_cnn_variants_run_on_a_batch(tmp_path):
    """The shipped CNN's dynamic-range kernels crashed the interpreter (SIGSEGV) when its batch was resized to
    the test split's size; the predictor runs batch 1, as devices do."""
    import tensorflow as tf

    from conftest import compose
    from pipeline.export_saved_model import write_saved_model
    from pipeline.models import build_model

    tf.keras.utils.set_random_seed(0)
    model = build_model(compose("model=cnn").model, (8, 8, 1), 10)
    meta = {"input_shape": [8, 8, 1], "class_names": list("abcdefghij"), "normalization": {"method": "minmax", "offset": 0.0, "scale": 16.0}}
    write_saved_model(model, meta, 16 / 255, tmp_path / "saved_model")
    raw = np.random.default_rng(0).uniform(0, 16, size=(360, 8, 8, 1)).astype(np.float32)
    expected = model.predict(raw / 16, verbose=0)
    for variant in ("dynamic_range", "int8"):
        write_tflite(tmp_path / "saved_model", tmp_path / f"{variant}.tflite", variant, representative=raw[:50])
        outputs = tflite_predictor(tmp_path / f"{variant}.tflite")(raw)
        assert outputs.shape == (360, 10) and np.abs(outputs - expected).max() < 0.1, variant
