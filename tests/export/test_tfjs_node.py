"""Tests for the Node.js TF.js graph model runner."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# tf.keras must be the legacy Keras 2 (tf-keras); set before tensorflow loads.
os.environ["TF_USE_LEGACY_KERAS"] = "1"

from pipeline.export.tfjs_node import (  # noqa: E402
    TFJS_BATCH_SIZE,
    run_tfjs,
    run_tfjs_graph_model,
    tfjs_runner_status,
)

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


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small conv net converted once: ``(tfjs dir, 100 inputs, Keras outputs)``."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(8, 8, 1), name="features"),
            tf.keras.layers.Conv2D(4, 3, activation="relu"),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(16, activation="relu"),
            tf.keras.layers.Dense(3, activation="softmax"),
        ]
    )
    root = tmp_path_factory.mktemp("tfjs")
    saved_model_dir = root / "saved_model"
    tf.saved_model.save(model, str(saved_model_dir))

    tfjs_dir = root / "tfjs"
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
    inputs = np.random.default_rng(0).normal(size=(100, 8, 8, 1)).astype(np.float32)
    return tfjs_dir, inputs, model.predict(inputs, verbose=0)


@needs_runner
def test_graph_model_matches_keras(converted) -> None:
    """A converted graph model gives the same outputs in TF.js as in Keras."""
    tfjs_dir, inputs, expected = converted
    actual = run_tfjs_graph_model(tfjs_dir, inputs)

    assert actual.dtype == np.float32
    assert actual.shape == expected.shape == (100, 3)
    assert np.max(np.abs(actual - expected)) <= 1e-4


@needs_runner
def test_the_wasm_backend_runs_it_in_batches(converted) -> None:
    """The check runs on the wasm backend (its .wasm from node_modules), in batches (100 = 3 x 32 + 4), with the
    pure-JS cpu backend's outputs; the latency is timed at batch 1."""
    tfjs_dir, inputs, expected = converted
    wasm = run_tfjs(tfjs_dir, inputs, latency_repeats=3, batch_size=32)
    assert (wasm.backend, wasm.batch_size, wasm.fallback) == ("wasm", 32, None)
    assert wasm.latency_seconds > 0
    cpu = run_tfjs(tfjs_dir, inputs, backend="cpu")
    assert (cpu.backend, cpu.batch_size, cpu.latency_seconds) == ("cpu", TFJS_BATCH_SIZE, None)
    assert np.max(np.abs(wasm.outputs - expected)) <= 1e-4
    assert np.max(np.abs(wasm.outputs - cpu.outputs)) <= 1e-5


@needs_runner
def test_a_wasm_backend_that_fails_falls_back_to_cpu(converted, monkeypatch, caplog) -> None:
    """No .wasm binary where the runner looks: the pure-JS backend checks the export instead, and says so."""
    tfjs_dir, inputs, expected = converted
    monkeypatch.setenv("TFJS_RUNNER_WASM_DIR", str(tfjs_dir / "no_wasm_here"))
    with caplog.at_level(logging.WARNING, logger="pipeline.export.tfjs_node"):
        result = run_tfjs(tfjs_dir, inputs[:5])
    assert result.backend == "cpu" and "no_wasm_here" in result.fallback
    assert "the wasm backend failed to initialise" in caplog.text
    assert np.max(np.abs(result.outputs - expected[:5])) <= 1e-4


@needs_runner
def test_a_bad_batch_size_is_one_line(converted) -> None:
    tfjs_dir, inputs, _ = converted
    with pytest.raises(RuntimeError, match=r"--batch-size must be an integer >= 1, got 0"):
        run_tfjs(tfjs_dir, inputs, batch_size=0)


@needs_runner
def test_missing_model_dir_raises(tmp_path: Path) -> None:
    """A missing model directory raises RuntimeError naming the path."""
    missing = tmp_path / "no_such_model"
    with pytest.raises(RuntimeError, match=re.escape(str(missing))):
        run_tfjs_graph_model(missing, np.zeros((1, 8), dtype=np.float32))
