"""The export report says how each artifact ran on the whole split (batch size, TF.js backend), and an older report
without that still renders."""

from __future__ import annotations

import numpy as np

from pipeline.export.report import Artifact, markdown_report, measure_artifact, timed_runner

CHECK = {
    "path": "model.tflite",
    "exact": True,
    "size_bytes": 2048,
    "latency_ms_batch1": 0.1,
    "max_abs_diff": 1e-6,
    "accuracy": 0.9,
    "accuracy_drop": 0.0,
    "argmax_agreement": 1.0,
}
REPORT = {
    "tolerance": 1e-4,
    "max_accuracy_drop": 0.01,
    "min_agreement": 0.98,
    "keras_accuracy": 0.9,
    "num_test_examples": 10,
    "skipped": {},
}


def test_the_markdown_says_how_each_artifact_ran():
    artifacts = {
        "tflite_float32": {**CHECK, "runtime": {"batch_size": 16}},
        "tflite_dynamic_range": {**CHECK, "exact": False, "runtime": {"batch_size": 1}},
        "tfjs": {**CHECK, "path": "tfjs", "runtime": {"backend": "wasm", "batch_size": 256}},
    }
    markdown = markdown_report({**REPORT, "artifacts": artifacts})
    assert (
        "Whole split run as: tflite_float32 batch 16; tflite_dynamic_range batch 1; "
        "tfjs batch 256, wasm backend." in markdown
    )
    fallback = {"backend": "cpu", "batch_size": 256, "fallback": "no .wasm"}
    markdown = markdown_report(
        {**REPORT, "artifacts": {"tfjs": {**CHECK, "path": "tfjs", "runtime": fallback}}}
    )
    assert "tfjs batch 256, cpu backend (fell back: no .wasm)." in markdown


def test_a_report_without_runtimes_still_renders():
    markdown = markdown_report({**REPORT, "artifacts": {"tflite_float32": CHECK}})
    assert (
        "| tflite_float32 (`model.tflite`) |" in markdown and "Whole split run as" not in markdown
    )


def test_the_latency_is_timed_on_one_example(tmp_path):
    """The whole split goes through the predictor once (in its batches); the latency runs are single examples."""
    seen = []

    def predict(x: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        return np.tile([[0.2, 0.8]], (len(x), 1))

    predict.batch_size = 4
    (tmp_path / "model.tflite").write_bytes(b"x")
    artifact = Artifact("tflite_float32", "model.tflite", True, timed_runner(predict))
    y = np.ones(10, dtype=int)
    check = measure_artifact(
        artifact, tmp_path, np.zeros((10, 2)), y, np.tile([[0.2, 0.8]], (10, 1)), 3
    )
    assert seen == [10, 1, 1, 1, 1]  # the split, a warm-up, 3 timed runs
    assert check["runtime"] == {"batch_size": 4} and check["latency_ms_batch1"] > 0
    assert 0 <= check["check_seconds"] < 60  # the split and the latency runs, timed
    assert check["accuracy"] == 1.0 and check["max_abs_diff"] == 0.0
