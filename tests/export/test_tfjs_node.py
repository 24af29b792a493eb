"""Tests for the Node.js TF.js graph model runner."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# tf.keras must be the legacy Keras 2 (tf-keras); set before tensorflow loads.
os.environ["TF_USE_LEGACY_KERAS"] = "1"

from pipeline.export.tfjs_node import run_tfjs_graph_model, tfjs_runner_status  # noqa: E402

RUNNER_STATUS = tfjs_runner_status()
needs_runner = pytest.mark.skipif(
    RUNNER_STATUS is not None, reason=f"TF.js Node runner unusable: {RUNNER_STATUS}"
)


def _converter() -> Path:
    """Return the tensorflowjs_converter next to the running Python.

    Returns:
        Path of the tensorflowjs_converter executable.
    """
    return Path(sys.executable).parent / "tensorflowjs_converter"


@needs_runner
def test_graph_model_matches_keras(tmp_path: Path) -> None:
    """A converted graph model gives the same outputs in TF.js as in Keras."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(8,), name="features"),
            tf.keras.layers.Dense(16, activation="relu"),
            tf.keras.layers.Dense(3, activation="softmax"),
        ]
    )
    saved_model_dir = tmp_path / "saved_model"
    tf.saved_model.save(model, str(saved_model_dir))

    tfjs_dir = tmp_path / "tfjs"
    converted = subprocess.run(
        [
            str(_converter()),
            "--input_format=tf_saved_model",
            "--output_format=tfjs_graph_model",
            "--signature_name=serving_default",
            "--saved_model_tags=serve",
            str(saved_model_dir),
            str(tfjs_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert converted.returncode == 0, converted.stderr[-2000:]
    assert (tfjs_dir / "model.json").is_file()

    inputs = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    expected = model.predict(inputs, verbose=0)
    actual = run_tfjs_graph_model(tfjs_dir, inputs)

    assert actual.dtype == np.float32
    assert actual.shape == expected.shape == (100, 3)
    assert np.max(np.abs(actual - expected)) <= 1e-4


@needs_runner
def test_missing_model_dir_raises(tmp_path: Path) -> None:
    """A missing model directory raises RuntimeError naming the path."""
    missing = tmp_path / "no_such_model"
    with pytest.raises(RuntimeError, match=re.escape(str(missing))):
        run_tfjs_graph_model(missing, np.zeros((1, 8), dtype=np.float32))
