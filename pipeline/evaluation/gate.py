"""The model gate: bless the evaluated model (or not) before anything is exported.

Absolute thresholds (``gate.min_accuracy``, ``gate.max_loss``) and, when
``gate.baseline`` is set, a threshold relative to a baseline's metrics
(``gate.max_accuracy_regression``): the baseline is a ``metrics.json`` path or ``git:<rev>``:
the same metrics file as it was at that revision, read through DVC, so it works whether the file is
committed to git or (the default layout) a DVC-cached output recorded in ``dvc.lock``. ``git:HEAD``
compares with the last committed run; a revision that has no such file yet is a first run and passes.

A regression model (its ``metrics.json`` has ``mae`` and no ``accuracy``) has its own thresholds:
``gate.max_mae`` and ``gate.min_r2`` (null = none), ``gate.max_loss``, and with a baseline
its MAE and RMSE may be at most ``1 + gate.max_error_increase`` times the baseline's; the
accuracy keys do not apply. ``blessing.json`` lists the checks that ran and, under
``not_applicable``, the other task's keys.

``reports/blessing.json`` is written either way with a human-readable reason; the export refuses
a model whose blessing says no, and the gate itself fails so ``dvc repro`` exits non-zero.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

from pipeline.errors import UserError
from pipeline.io import read_json, write_json
from pipeline.settings import GateSettings

logger = logging.getLogger(__name__)

GIT_PREFIX = "git:"


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


def read_at_revision(path: Path, revision: str) -> tuple[str | None, str]:
    """``path``'s text at a git revision (git-tracked or a DVC output), or ``(None, why)`` when it has none.

    Raises:
        UserError: ``path`` outside a git repository, an unknown revision, or a DVC output whose
            data is in neither the DVC cache nor a remote.
    """
    path = Path(path).resolve()
    culprit = f"gate.baseline=git:{revision}"
    toplevel = _git(
        ["rev-parse", "--show-toplevel"], path.parent if path.parent.is_dir() else Path.cwd()
    )
    if toplevel.returncode != 0:
        raise UserError(
            f"gate: {culprit} but {path} is not inside a git repository: use a metrics.json path or null"
        )
    if (
        _git(["rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], path.parent).returncode
        != 0
    ):
        raise UserError(
            f"gate: cannot read the baseline git:{revision}: unknown git revision '{revision}': set "
            "gate.baseline to git:<an existing revision>, a metrics.json path, or null"
        )
    from dvc.fs import (
        DVCFileSystem,
    )  # DVC's own view of the repo at a revision: git files and DVC outputs alike

    root = Path(toplevel.stdout.strip()).resolve()
    relative = path.relative_to(root).as_posix()
    fs = DVCFileSystem(repo=str(root), rev=revision, subrepos=True)
    if not fs.exists(relative):
        return None, f"no baseline: {relative} is neither in git nor a DVC output at {revision}"
    try:
        return fs.read_text(relative), f"{relative} at git {revision}"
    except FileNotFoundError:
        raise UserError(
            f"gate: the baseline {relative} at {revision} is a DVC output whose data is not in the DVC cache: "
            f"run `dvc fetch --rev {revision}` (or `dvc pull`) first, or set gate.baseline to a metrics.json path"
        ) from None


def load_baseline(
    baseline: str, metrics_path: Path, required: str = "accuracy"
) -> tuple[dict | None, str]:
    """Baseline metrics and where they came from; ``(None, why)`` when a git revision has none yet.

    Raises:
        UserError: a baseline file that is missing or not JSON, or a git revision that cannot be read.
    """
    if baseline.startswith(GIT_PREFIX):
        text, source = read_at_revision(metrics_path, baseline[len(GIT_PREFIX) :])
        if text is None:
            return None, source
    else:
        path = Path(baseline)
        if not path.is_file():
            raise UserError(
                f"gate: baseline metrics {path} not found: set gate.baseline to an existing metrics.json, "
                "git:<revision>, or null"
            )
        text, source = path.read_text(), str(path)
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(
            f"gate: baseline {source} is not JSON ({error}): point gate.baseline at a metrics.json"
        ) from None
    if not isinstance(metrics, dict) or required not in metrics:
        raise UserError(
            f"gate: baseline {source} has no '{required}': point gate.baseline at a reports/metrics.json "
            "of the same task"
        )
    return metrics, source


def metrics_task(metrics: dict) -> str:
    """``regression`` for a regression model's ``metrics.json`` (MAE, no accuracy), else ``classification``."""
    return "regression" if "accuracy" not in metrics and "mae" in metrics else "classification"


NOT_APPLICABLE = {  # keys of the other task, listed in blessing.json so a reader sees why they did not run
    "classification": ["gate.max_mae", "gate.min_r2", "gate.max_error_increase"],
    "regression": ["gate.min_accuracy", "gate.max_accuracy_regression"],
}


def _at_most(name: str, value: float, threshold: float) -> dict:
    return {
        "name": name,
        "value": float(value),
        "threshold": float(threshold),
        "passed": bool(value <= threshold),
    }


def _at_least(name: str, value: float, threshold: float) -> dict:
    return {
        "name": name,
        "value": float(value),
        "threshold": float(threshold),
        "passed": bool(value >= threshold),
    }


def regression_checks(metrics: dict, settings: GateSettings, baseline: dict | None) -> list[dict]:
    """A regression model's thresholds: ``max_mae``, ``min_r2``, ``max_loss`` (each when set) and, with a
    baseline, MAE and RMSE at most the baseline's times ``1 + max_error_increase``."""
    checks = []
    if settings.max_mae is not None:
        checks.append(_at_most("mae <= gate.max_mae", metrics["mae"], settings.max_mae))
    if settings.min_r2 is not None:
        checks.append(_at_least("r2 >= gate.min_r2", metrics["r2"], settings.min_r2))
    if settings.max_loss is not None:
        checks.append(_at_most("loss <= gate.max_loss", metrics["loss"], settings.max_loss))
    if baseline is not None:
        for key in ("mae", "rmse"):
            if key in baseline:
                ceiling = float(baseline[key]) * (1.0 + settings.max_error_increase)
                checks.append(
                    _at_most(
                        f"{key} <= baseline {key} x (1 + gate.max_error_increase)",
                        metrics[key],
                        ceiling,
                    )
                )
    return checks


def gate_checks(metrics: dict, settings: GateSettings, baseline: dict | None) -> list[dict]:
    """Each threshold as ``{name, value, threshold, passed}`` (``value``/``threshold`` are numbers)."""
    if metrics_task(metrics) == "regression":
        return regression_checks(metrics, settings, baseline)
    checks = [
        _at_least("accuracy >= gate.min_accuracy", metrics["accuracy"], settings.min_accuracy)
    ]
    if settings.max_loss is not None:
        checks.append(_at_most("loss <= gate.max_loss", metrics["loss"], settings.max_loss))
    if baseline is not None:
        floor = float(baseline["accuracy"]) - settings.max_accuracy_regression
        checks.append(
            _at_least(
                "accuracy >= baseline accuracy - gate.max_accuracy_regression",
                metrics["accuracy"],
                floor,
            )
        )
    return checks


def _reason(checks: list[dict], baseline_source: str) -> str:
    if not checks:
        return f"blessed: no threshold is set (every evaluate.* threshold of this task is null) [baseline: {baseline_source}]"
    failed = [check for check in checks if not check["passed"]]
    shown = failed or checks
    parts = [
        f"{check['name'].split(' ')[0]} {check['value']:.4f} {'fails' if failed else 'passes'} "
        f"{check['name'].split(' ', 1)[1]} ({check['threshold']:.4f})"
        for check in shown
    ]
    return (
        ("not blessed: " if failed else "blessed: ")
        + "; ".join(parts)
        + f" [baseline: {baseline_source}]"
    )


def run_gate(settings: GateSettings, metrics_path: Path, blessing_path: Path) -> dict:
    """Decide whether the model at ``metrics_path`` is fit to export; write ``blessing_path`` either way.

    Returns:
        The blessing written: ``{"blessed", "reason", "checks", "metrics", "baseline"}``.

    Raises:
        UserError: missing metrics, an unreadable baseline, or (after writing the file) a model
            that is not blessed, with the reason.
    """
    metrics_path, blessing_path = Path(metrics_path), Path(blessing_path)
    if not metrics_path.is_file():
        raise UserError(
            f"gate: no metrics at {metrics_path}: run the evaluate stage first (dvc repro evaluate)"
        )
    metrics = read_json(metrics_path)
    task = metrics_task(metrics)
    required = "mae" if task == "regression" else "accuracy"
    baseline, source = (
        (None, "none (gate.baseline is null)")
        if settings.baseline is None
        else load_baseline(settings.baseline, metrics_path, required)
    )
    checks = gate_checks(metrics, settings, baseline)
    blessed = all(check["passed"] for check in checks)
    blessing = {
        "blessed": blessed,
        "task": task,
        "reason": _reason(checks, source),
        "checks": checks,
        "not_applicable": NOT_APPLICABLE[task],
        "metrics": {
            key: metrics[key] for key in ("accuracy", "mae", "rmse", "r2", "loss") if key in metrics
        },
        "baseline": source,
    }
    blessing_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(blessing_path, blessing)
    logger.info("Gate: %s -> %s", blessing["reason"], blessing_path)
    if not blessed:
        raise UserError(
            f"gate: model {blessing['reason']}: improve the model or relax the evaluate.* thresholds (see {blessing_path})"
        )
    return blessing
