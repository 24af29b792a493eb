"""Evaluation reports and verified exports of a small model trained in-process on digits."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.evaluate import class_probabilities, compute_metrics, confusion_matrix, run_evaluate
from pipeline.export import run_export
from pipeline.tfjs_node import tfjs_runner_status

RUNNER_STATUS = tfjs_runner_status()


def test_metrics_on_known_predictions():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    y = np.array([0, 1, 2, 2])
    metrics, per_class = compute_metrics(y, probabilities, ["a", "b", "c"])
    assert metrics["accuracy"] == 0.75
    assert metrics["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.7, 0.7, 0.1])))
    assert metrics["recall_macro"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert per_class["c"]["recall"] == 0.5 and per_class["a"]["precision"] == 0.5
    assert confusion_matrix(y, probabilities.argmax(1), 3).tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]


def test_binary_outputs_get_two_columns_and_auc():
    probabilities = class_probabilities(np.array([[0.2], [0.8], [0.6], [0.1]]))
    assert probabilities.shape == (4, 2) and np.allclose(probabilities.sum(1), 1)
    metrics, _ = compute_metrics(np.array([0, 1, 1, 0]), probabilities, ["no", "yes"])
    assert metrics["auc"] == 1.0 and metrics["accuracy"] == 1.0


def test_evaluate_writes_every_report(trained_mlp):
    config, root, model = trained_mlp
    metrics = run_evaluate(config.evaluate, Path(config.paths.processed), Path(config.paths.models), root / "reports")
    assert metrics["accuracy"] > 0.9, "an MLP on digits is well above 90% after 15 epochs"
    assert json.loads((root / "reports" / "metrics.json").read_text()) == metrics
    rows = list(csv.DictReader(open(root / "reports" / "confusion.csv")))
    assert len(rows) == metrics["num_examples"] == 360 and set(rows[0]) == {"actual", "predicted"}
    assert np.mean([r["actual"] == r["predicted"] for r in rows]) == pytest.approx(metrics["accuracy"])
    assert (root / "reports" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert set(json.loads((root / "reports" / "per_class.json").read_text())) == {str(d) for d in range(10)}
    assert not [p for p in (root / "reports").iterdir() if p.name.startswith(".")]


def test_evaluate_without_a_model_is_one_line(digits_pipeline, tmp_path):
    config, _ = digits_pipeline
    with pytest.raises(UserError, match="run the train stage first"):
        run_evaluate(config.evaluate, Path(config.paths.processed), tmp_path / "nothing", tmp_path / "reports")
    assert not (tmp_path / "reports" / "metrics.json").exists()


@pytest.mark.skipif(RUNNER_STATUS is not None, reason=f"TF.js Node runner unusable: {RUNNER_STATUS}")
def test_export_artifacts_match_the_trained_model(trained_mlp):
    import tensorflow as tf

    config, root, model = trained_mlp
    out = root / "exports"
    report = run_export(config.export, Path(config.paths.processed), Path(config.paths.models), out)
    assert set(report["artifacts"]) == {"saved_model", "tflite", "tfjs"}
    for name, check in report["artifacts"].items():
        assert check["max_abs_diff"] <= 1e-4, name
        assert check["argmax_agreement"] == 1.0 and check["size_bytes"] > 0
    assert report["num_check_inputs"] >= 100
    assert (out / "tfjs" / "model.json").is_file() and (out / "model.tflite").stat().st_size > 0
    assert json.loads((out / "report.json").read_text())["tolerance"] == config.export.tolerance
    # The SavedModel is usable as TF Serving would: named signature, named input and output.
    signature = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["inputs"]
    assert list(signature.structured_outputs) == ["probabilities"]


def test_export_above_tolerance_fails_and_writes_nothing(trained_mlp, tmp_path):
    config, _, _ = trained_mlp
    strict = dataclasses.replace(config.export, tolerance=1e-12, tfjs=False)
    out = tmp_path / "exports"
    with pytest.raises(UserError, match=r"differs from the trained model by .* \(> export.tolerance=1e-12\)") as caught:
        run_export(strict, Path(config.paths.processed), Path(config.paths.models), out)
    assert "\n" not in str(caught.value)
    assert not out.exists() or not any(out.iterdir())


def test_export_with_a_format_off_removes_its_stale_artifact(trained_mlp, tmp_path):
    config, _, _ = trained_mlp
    out = tmp_path / "exports"
    (out / "tfjs").mkdir(parents=True)
    (out / "tfjs" / "model.json").write_text("{}")
    only_tflite = dataclasses.replace(config.export, saved_model=False, tfjs=False)
    report = run_export(only_tflite, Path(config.paths.processed), Path(config.paths.models), out)
    assert list(report["artifacts"]) == ["tflite"]
    assert sorted(p.name for p in out.iterdir()) == ["model.tflite", "report.json"]
