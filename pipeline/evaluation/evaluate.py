"""Test-split evaluation: metrics, per-class report, confusion matrix and training curves.

Writes into ``reports/``: ``metrics.json`` (DVC metrics), ``per_class.json``, ``confusion.csv``
(one ``actual,predicted`` row per test example: DVC's confusion-matrix plot data),
``confusion.png`` and ``curves.png`` (the train stage's ``models/curves/*.csv`` and
``learning_rate.csv`` drawn, or a note that the model recorded none; the pictures are
:mod:`pipeline.evaluation.plots`). A regression model (``meta.json`` ``task: regression``) writes
the same files, since ``dvc.yaml`` declares them: ``metrics.json`` holds ``loss`` (MSE), ``mse``,
``rmse``, ``mae``, ``r2`` and ``num_examples``; ``confusion.csv`` the ``actual,predicted`` values
(plot them with ``dvc plots show reports/confusion.csv --template scatter -x actual -y predicted``);
``confusion.png`` a predicted-vs-actual scatter; ``per_class.json`` only a note (no classes).
Every file is written to a temporary directory first and moved into place with ``metrics.json``
last, so an interrupted run never leaves metrics that look complete.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from pathlib import Path

import numpy as np

from pipeline.data.shards import load_split
from pipeline.errors import UserError
from pipeline.evaluation.plots import (
    confusion_figure,
    predicted_vs_actual_figure,
    save_figure,
    write_curves_png,
)
from pipeline.io import read_json, replace_path, write_json
from pipeline.settings import EvaluateSettings
from pipeline.training.model_io import (
    class_probabilities,
    load_trained_model,
    predict_with_progress,
)

logger = logging.getLogger(__name__)

CURVES_PNG = "curves.png"  # the train stage's curves drawn for people who do not use dvc plots
REPORT_FILES = (
    "per_class.json",
    "confusion.csv",
    "confusion.png",
    CURVES_PNG,
    "metrics.json",  # last: it marks complete reports
)
EPSILON = 1e-7  # Keras's clipping constant for cross-entropy


def predict_probabilities(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities for ``x`` in batches."""
    return class_probabilities(
        predict_with_progress(model, x, batch_size, "evaluate: predicting the test split")
    )


def compute_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str]
) -> tuple[dict, dict]:
    """Overall metrics (``accuracy``, ``loss``, macro precision/recall/F1, AUC when binary) and a
    per-class report (``precision``, ``recall``, ``f1-score``, ``support``).

    The same figures as scikit-learn's ``precision_recall_fscore_support`` (macro over every
    class, ``zero_division=0``), ``classification_report`` and ``roc_auc_score``
    (``tests/evaluation/test_evaluate.py`` compares them), in numpy: importing ``sklearn.metrics``
    cost the stage ~2 s of CPU (docs/benchmarks.md#the-evaluate-stages-start-up).
    """
    y_true = np.asarray(y_true).astype(np.int64)
    predicted = probabilities.argmax(axis=1)
    picked = np.clip(probabilities[np.arange(len(y_true)), y_true], EPSILON, 1.0 - EPSILON)
    scores = per_class_scores(confusion_matrix(y_true, predicted, len(class_names)))
    metrics = {
        "accuracy": float(np.mean(predicted == y_true)),
        "loss": float(-np.mean(np.log(picked))),
        "precision_macro": float(scores["precision"].mean()),
        "recall_macro": float(scores["recall"].mean()),
        "f1_macro": float(scores["f1-score"].mean()),
        "num_examples": int(len(y_true)),
    }
    if len(class_names) == 2 and len(np.unique(y_true)) == 2:
        metrics["auc"] = binary_auc(y_true, probabilities[:, 1])
    per_class = {
        name: {key: float(values[index]) for key, values in scores.items()}
        for index, name in enumerate(class_names)
    }
    return metrics, per_class


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(len(numerator), dtype=np.float64)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of each class from a confusion matrix (actual classes as
    rows); a score with nothing to divide by (a class never predicted, or absent) is 0."""
    hits = np.diag(matrix).astype(np.float64)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    return {
        "precision": _ratio(hits, predicted),
        "recall": _ratio(hits, support),
        "f1-score": _ratio(2 * hits, predicted + support),  # 2PR / (P + R)
        "support": support.astype(np.float64),
    }


def binary_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the positive class 1: the probability that a
    random positive outscores a random negative, ties counting half (Mann-Whitney U over ranks
    that average ties)."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based, ties averaged
    positive = np.asarray(y_true) == 1
    positives, negatives = int(positive.sum()), int((~positive).sum())
    return float(
        (ranks[positive].sum() - positives * (positives + 1) / 2.0) / (positives * negatives)
    )


def confusion_matrix(y_true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with actual classes as rows and predicted classes as columns."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(
        matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1
    )
    return matrix


def write_confusion_csv(
    path: Path, y_true: np.ndarray, predicted: np.ndarray, class_names: list[str]
) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["actual", "predicted"])
        for actual, guess in zip(y_true, predicted, strict=False):
            writer.writerow([class_names[int(actual)], class_names[int(guess)]])


def regression_metrics(y_true: np.ndarray, predicted: np.ndarray) -> dict:
    """``loss`` (the mean squared error, the default regression loss), ``mse``, ``rmse``, ``mae``, ``r2`` and ``num_examples``.

    ``r2`` is 1 - SS_res / SS_tot: 1 is perfect, 0 is no better than predicting the test mean.
    """
    y_true, predicted = (
        np.asarray(y_true, dtype=np.float64).ravel(),
        np.asarray(predicted, dtype=np.float64).ravel(),
    )
    errors = predicted - y_true
    mse = float(np.mean(errors**2))
    total = float(np.sum((y_true - y_true.mean()) ** 2))
    return {
        "loss": mse,
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(errors))),
        "r2": float(1.0 - np.sum(errors**2) / total) if total > 0 else 0.0,
        "num_examples": int(len(y_true)),
    }


def write_pairs_csv(path: Path, y_true: np.ndarray, predicted: np.ndarray) -> None:
    """One ``actual,predicted`` row per test example (a regression model's values, 6 significant digits)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["actual", "predicted"])
        writer.writerows(
            (f"{actual:.6g}", f"{guess:.6g}")
            for actual, guess in zip(np.ravel(y_true), np.ravel(predicted), strict=False)
        )


REGRESSION_NOTE = {
    "note": "regression (data.task=regression): no classes; metrics.json has mse, rmse, mae and r2, "
    "confusion.csv one actual,predicted pair per test example and confusion.png their scatter plot"
}


def _write_regression_reports(
    directory: Path, model, x: np.ndarray, y: np.ndarray, batch_size: int, source: str
) -> dict:
    predicted = np.asarray(
        predict_with_progress(model, x, batch_size, "evaluate: predicting the test split"),
        dtype=np.float64,
    )
    if predicted.ndim != 2 or predicted.shape[1] != 1:
        raise UserError(
            f"evaluate: the model predicts {predicted.shape[1:]} values per example but the data is a regression "
            "target: rerun the train stage on this data (dvc repro)"
        )
    metrics = regression_metrics(y, predicted)
    write_json(directory / "per_class.json", REGRESSION_NOTE)
    write_pairs_csv(directory / "confusion.csv", y, predicted)
    title = f"{source}: test R\u00b2 {metrics['r2']:.4f}, MAE {metrics['mae']:.4g}"
    save_figure(predicted_vs_actual_figure(y, predicted[:, 0], title), directory / "confusion.png")
    write_json(directory / "metrics.json", metrics)
    logger.info(
        "Test MAE %.4g, RMSE %.4g, R^2 %.4f on %d examples",
        metrics["mae"],
        metrics["rmse"],
        metrics["r2"],
        metrics["num_examples"],
    )
    return metrics


def run_evaluate(
    settings: EvaluateSettings, processed_dir: Path, models_dir: Path, output_dir: Path
) -> dict:
    """Evaluate the trained model on the test split and write the reports.

    Returns:
        The metrics written to ``metrics.json``.
    """
    from pipeline.env import preflight

    preflight()  # the Keras flavour this pipeline needs, checked before any work
    processed_dir, output_dir = Path(processed_dir), Path(output_dir)
    if not (processed_dir / "meta.json").is_file():
        raise UserError(
            f"evaluate: no preprocessed data at {processed_dir}: run the preprocess stage first"
        )
    meta = read_json(processed_dir / "meta.json")
    class_names = [str(name) for name in meta["class_names"]]
    model = load_trained_model(models_dir)
    x, y = load_split(processed_dir, "test")
    if meta.get("task") == "regression":
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".reports.tmp-", dir=output_dir) as tmp:
            metrics = _write_regression_reports(
                Path(tmp), model, x, y, settings.batch_size, meta["source"]
            )
            write_curves_png(
                models_dir, Path(tmp) / CURVES_PNG, f"{meta['source']}: training curves"
            )
            for name in REPORT_FILES:
                replace_path(Path(tmp) / name, output_dir / name)
        return metrics
    probabilities = predict_probabilities(model, x, settings.batch_size)
    if probabilities.shape[1] != len(class_names):
        raise UserError(
            f"evaluate: the model predicts {probabilities.shape[1]} classes but the data has {len(class_names)}: "
            "rerun the train stage on this data (dvc repro)"
        )
    metrics, per_class = compute_metrics(y, probabilities, class_names)
    predicted = probabilities.argmax(axis=1)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".reports.tmp-", dir=output_dir) as tmp:
        tmp = Path(tmp)
        write_json(tmp / "per_class.json", per_class)
        write_confusion_csv(tmp / "confusion.csv", y, predicted, class_names)
        matrix = confusion_matrix(y, predicted, len(class_names))
        title = f"{meta['source']}: test accuracy {metrics['accuracy']:.4f}"
        save_figure(confusion_figure(matrix, class_names, title), tmp / "confusion.png")
        write_curves_png(models_dir, tmp / CURVES_PNG, f"{meta['source']}: training curves")
        write_json(tmp / "metrics.json", metrics)
        for name in REPORT_FILES:
            replace_path(tmp / name, output_dir / name)
    logger.info(
        "Test accuracy %.4f, loss %.4f, macro F1 %.4f on %d examples -> %s",
        metrics["accuracy"],
        metrics["loss"],
        metrics["f1_macro"],
        metrics["num_examples"],
        output_dir,
    )
    return metrics
