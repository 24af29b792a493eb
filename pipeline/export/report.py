"""Measure every export on the whole test split: parity, accuracy, batch-1 latency, size on disk, and how it ran.

The whole split runs in batches (``runtime`` in each artifact's check: the batch size, and TF.js's
backend); the latency is a single example's, the median of ``export.latency_repeats`` runs.

``exports/report.json`` (DVC metrics) holds the numbers; ``exports/report.md`` the same as a short
markdown table for CI summaries (e.g. ``cat exports/report.md >> $GITHUB_STEP_SUMMARY``).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.io import directory_size
from pipeline.training.model_io import class_probabilities

logger = logging.getLogger(__name__)

# (x, latency_repeats) -> (outputs for x, median seconds of a batch-1 run or None, how x ran: {"batch_size": ...})
Runner = Callable[[np.ndarray, int], tuple[np.ndarray, "float | None", dict]]


@dataclass
class Artifact:
    """One export: where it lives inside ``exports/``, whether it must match Keras within the
    tolerance (float weights) or only keep its accuracy (quantized), and how to run it."""

    name: str
    relative_path: str
    exact: bool
    run: Runner


def timed_runner(predict: Callable[[np.ndarray], np.ndarray]) -> Runner:
    """A :data:`Runner` for an in-process predictor: median wall time of repeated batch-1 calls.

    The runtime's batch size is ``predict.batch_size`` when the predictor has one (TFLite), else the
    whole of ``x`` (one call).
    """

    def run(x: np.ndarray, latency_repeats: int) -> tuple[np.ndarray, float | None, dict]:
        outputs = predict(x)
        runtime = {"batch_size": int(getattr(predict, "batch_size", len(x)))}
        if not latency_repeats:
            return outputs, None, runtime
        one = x[:1]
        predict(one)  # warm-up: first call traces / allocates
        times = []
        for _ in range(latency_repeats):
            started = time.perf_counter()
            predict(one)
            times.append(time.perf_counter() - started)
        return outputs, statistics.median(times), runtime

    return run


def _run_and_describe(
    artifact: Artifact, workdir: Path, raw_x: np.ndarray, latency_repeats: int
) -> tuple[np.ndarray, dict]:
    """``artifact``'s outputs on the raw test inputs, and the task-independent part of its check (path, size, latency,
    how it ran)."""
    started = time.perf_counter()
    outputs, latency, runtime = artifact.run(raw_x, latency_repeats)
    seconds = time.perf_counter() - started
    logger.debug(
        "Ran %s on %d examples in %.2f s (%s)", artifact.name, len(raw_x), seconds, runtime
    )
    path = workdir / artifact.relative_path
    return outputs, {
        "path": artifact.relative_path,
        "size_bytes": directory_size(path) if path.is_dir() else path.stat().st_size,
        "exact": artifact.exact,
        "latency_ms_batch1": None if latency is None else round(latency * 1000.0, 4),
        "runtime": runtime,
        "check_seconds": round(seconds, 3),  # the whole split and the latency runs, in its runtime
    }


def measure_artifact(
    artifact: Artifact,
    workdir: Path,
    raw_x: np.ndarray,
    y: np.ndarray,
    reference: np.ndarray,
    latency_repeats: int,
) -> dict:
    """Run ``artifact`` on the raw test inputs and compare with the Keras probabilities ``reference``."""
    outputs, check = _run_and_describe(artifact, workdir, raw_x, latency_repeats)
    probabilities = class_probabilities(
        np.asarray(outputs, dtype=np.float64).reshape(len(raw_x), -1)
    )
    accuracy = float(np.mean(probabilities.argmax(axis=1) == y))
    keras_accuracy = float(np.mean(reference.argmax(axis=1) == y))
    check.update(
        max_abs_diff=float(np.max(np.abs(probabilities - reference))),
        argmax_agreement=float(np.mean(probabilities.argmax(axis=1) == reference.argmax(axis=1))),
        accuracy=accuracy,
        accuracy_drop=keras_accuracy - accuracy,
    )
    logger.info(
        "Checked %-21s max abs diff %.2e, accuracy %.4f (drop %+.4f), %s ms/example, %s bytes",
        artifact.name,
        check["max_abs_diff"],
        accuracy,
        check["accuracy_drop"],
        check["latency_ms_batch1"],
        f"{check['size_bytes']:,}",
    )
    return check


def regression_parity(
    outputs: np.ndarray, y: np.ndarray, reference: np.ndarray, target_std: float
) -> dict:
    """A regression artifact against the trained model: the largest difference from its predictions (in the
    target's units, and in train target standard deviations: what ``export.tolerance`` bounds, since the
    network computes the standardised target), the test MAE and its increase relative to the model's."""
    predicted = np.asarray(outputs, dtype=np.float64).reshape(len(y))
    reference, y = (
        np.asarray(reference, dtype=np.float64).reshape(len(y)),
        np.asarray(y, dtype=np.float64),
    )
    mae, keras_mae = float(np.mean(np.abs(predicted - y))), float(np.mean(np.abs(reference - y)))
    difference = float(np.max(np.abs(predicted - reference))) if len(y) else 0.0
    increase = (
        (mae - keras_mae) / keras_mae if keras_mae > 0 else (0.0 if mae == 0 else float("inf"))
    )
    return {
        "max_abs_diff": difference,
        "max_diff_in_std": difference / target_std,
        "mae": mae,
        "mae_increase": increase,
    }


def measure_regression_artifact(
    artifact: Artifact,
    workdir: Path,
    raw_x: np.ndarray,
    y: np.ndarray,
    reference: np.ndarray,
    latency_repeats: int,
    target_std: float,
) -> dict:
    """Run a regression ``artifact`` on the raw test inputs and compare with the Keras predictions ``reference``."""
    outputs, check = _run_and_describe(artifact, workdir, raw_x, latency_repeats)
    check.update(regression_parity(outputs, y, reference, target_std))
    logger.info(
        "Checked %-21s max abs diff %.2e (%.2e std), MAE %.4g (%+.2f%%), %s ms/example, %s bytes",
        artifact.name,
        check["max_abs_diff"],
        check["max_diff_in_std"],
        check["mae"],
        100 * check["mae_increase"],
        check["latency_ms_batch1"],
        f"{check['size_bytes']:,}",
    )
    return check


def regression_failures(report: dict) -> str | None:
    """:func:`report_failures` for a regression model: float artifacts within ``export.tolerance`` train
    target standard deviations of the model, every artifact's MAE at most ``export.max_mae_increase`` above it."""
    tolerance, max_increase, artifacts = (
        report["tolerance"],
        report["max_mae_increase"],
        report["artifacts"],
    )
    diffs = {
        name: check["max_diff_in_std"]
        for name, check in artifacts.items()
        if check["exact"] and not check["max_diff_in_std"] <= tolerance
    }
    if diffs:
        worst = max(diffs, key=diffs.get)
        return (
            f"export: the {worst} export differs from the trained model by {artifacts[worst]['max_abs_diff']:.3g} "
            f"({diffs[worst]:.3g} target std > export.tolerance={tolerance:g}); nothing was exported: check the conversion "
            "or raise export.tolerance"
        )
    increases = {
        name: check["mae_increase"]
        for name, check in artifacts.items()
        if not check["mae_increase"] <= max_increase
    }
    if increases:
        worst = max(increases, key=lambda name: (not artifacts[name]["exact"], increases[name]))
        return (
            f"export: the {worst} export's test MAE {artifacts[worst]['mae']:.4g} is {100 * increases[worst]:.1f}% above the "
            f"trained model's {report['keras_mae']:.4g} (> export.max_mae_increase={max_increase:g}); nothing was exported: "
            "drop that variant from export.tflite / export.tfjs_quantization or raise export.max_mae_increase"
        )
    return None


def report_failures(report: dict) -> str | None:
    """The worst broken promise of ``report``, as one line, or None when every artifact passed."""
    if report.get("task") == "regression":
        return regression_failures(report)
    tolerance, max_drop = report["tolerance"], report["max_accuracy_drop"]
    artifacts = report["artifacts"]
    diffs = {
        name: check["max_abs_diff"]
        for name, check in artifacts.items()
        if check["exact"] and not check["max_abs_diff"] <= tolerance
    }
    if diffs:
        worst = max(diffs, key=diffs.get)
        return (
            f"export: the {worst} export differs from the trained model by {diffs[worst]:.3g} (> export.tolerance={tolerance:g}); "
            "nothing was exported: check the conversion or raise export.tolerance"
        )
    drops = {
        name: check["accuracy_drop"]
        for name, check in artifacts.items()
        if not check["accuracy_drop"] <= max_drop
    }
    if (
        drops
    ):  # name a quantized artifact first: it is the one to drop (float ones already match Keras)
        worst = max(drops, key=lambda name: (not artifacts[name]["exact"], drops[name]))
        return (
            f"export: the {worst} export's test accuracy {artifacts[worst]['accuracy']:.4f} is {drops[worst]:.4f} below the "
            f"trained model's {report['keras_accuracy']:.4f} (> export.max_accuracy_drop={max_drop:g}); nothing was exported: "
            "drop that variant from export.tflite / export.tfjs_quantization or raise export.max_accuracy_drop"
        )
    return agreement_failure(report)


def agreement_failure(report: dict) -> str | None:
    """The quantized artifact (classification) giving the trained model's class on the fewest test examples, as one
    line, when that share is below ``export.min_agreement``: an accuracy that holds can hide flips both ways."""
    min_agreement, artifacts = report["min_agreement"], report["artifacts"]
    shares = {
        name: check["argmax_agreement"]
        for name, check in artifacts.items()
        if not check["exact"] and not check["argmax_agreement"] >= min_agreement
    }
    if not shares:
        return None
    worst = min(shares, key=shares.get)
    return (
        f"export: the {worst} export gives the trained model's class on {shares[worst]:.4f} of the test examples "
        f"(< export.min_agreement={min_agreement:g}); nothing was exported: drop that variant from export.tflite / "
        "export.tfjs_quantization or lower export.min_agreement"
    )


def _size(size_bytes: int) -> str:
    return (
        f"{size_bytes / 1024:.1f} KiB"
        if size_bytes < 1024 * 1024
        else f"{size_bytes / 1024 / 1024:.2f} MiB"
    )


def _runtime_line(artifacts: dict) -> str | None:
    """How each artifact ran on the whole split (batch size, TF.js backend), as one line; None for an older report."""
    described = []
    for name, check in artifacts.items():
        runtime = check.get("runtime")
        if not runtime:
            continue
        backend = f", {runtime['backend']} backend" if runtime.get("backend") else ""
        fallback = f" (fell back: {runtime['fallback']})" if runtime.get("fallback") else ""
        described.append(f"{name} batch {runtime['batch_size']}{backend}{fallback}")
    if not described:
        return None
    return "Whole split run as: " + "; ".join(described) + "."


def markdown_report(report: dict) -> str:
    """A short markdown table of ``report`` for CI job summaries."""
    if report.get("task") == "regression":
        trained = f"trained model MAE {report['keras_mae']:.4g}"
        headers, cells = (
            ("MAE", "MAE increase"),
            lambda check: (f"{check['mae']:.4g}", f"{100 * check['mae_increase']:+.2f}%"),
        )
        promise = (
            f"{report['tolerance']:g} train target std ({report['tolerance'] * report['target_std']:.3g} in the target's units); "
            f"every artifact's MAE may be at most {100 * report['max_mae_increase']:g}% higher. "
            "(export.min_agreement does not apply: a regression model predicts no class.)"
        )
    else:
        trained = f"trained model accuracy {report['keras_accuracy']:.4f}"
        headers, cells = (
            ("accuracy", "drop", "agreement"),
            lambda check: (
                f"{check['accuracy']:.4f}",
                f"{check['accuracy_drop']:+.4f}",
                f"{check['argmax_agreement']:.4f}",
            ),
        )
        promise = (
            f"{report['tolerance']:g}; every artifact may lose at most {report['max_accuracy_drop']:g} "
            f"accuracy; quantized ones must give the trained model's class (agreement) on at least "
            f"{report['min_agreement']:g} of the test examples."
        )
    lines = [
        f"### Exports ({report['num_test_examples']} test examples, {trained})",
        "",
        f"| artifact | size | max abs diff | {' | '.join(headers)} | latency (ms, batch 1) |",
        "|---|---:|---:|" + "---:|" * (len(headers) + 1),
    ]
    for name, check in report["artifacts"].items():
        latency = "-" if check["latency_ms_batch1"] is None else f"{check['latency_ms_batch1']:.3f}"
        lines.append(
            f"| {name} (`{check['path']}`) | {_size(check['size_bytes'])} | {check['max_abs_diff']:.2e} | "
            f"{' | '.join(cells(check))} | {latency} |"
        )
    runtimes = _runtime_line(report["artifacts"])
    if runtimes:
        lines += ["", runtimes]
    skipped = report.get("skipped") or {}
    if skipped:
        lines += [
            "",
            "Skipped: "
            + "; ".join(f"`{directory}/` ({switch})" for directory, switch in skipped.items())
            + ".",
        ]
    lines += ["", f"Float artifacts must match within {promise}"]
    return "\n".join(lines) + "\n"
