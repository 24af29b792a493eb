"""The model gate: absolute and baseline-relative thresholds, the blessing file, the stage's exit code."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from conftest import compose, run_stage, tmp_paths
from pipeline.errors import UserError
from pipeline.gate import load_baseline, require_blessing, run_gate

METRICS = {"accuracy": 0.85, "loss": 0.45, "f1_macro": 0.84}


@pytest.fixture
def evaluate_settings():
    return compose("experiment=smoke").evaluate


def write_metrics(directory: Path, metrics: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory / "metrics.json"


def test_defaults_bless_a_smoke_run_and_say_why(evaluate_settings, tmp_path):
    assert evaluate_settings.min_accuracy == 0.5 and evaluate_settings.baseline is None
    blessing = run_gate(evaluate_settings, write_metrics(tmp_path, METRICS), tmp_path / "blessing.json")
    assert blessing["blessed"] and blessing["reason"].startswith("blessed: accuracy 0.8500 passes >= evaluate.min_accuracy (0.5000)")
    assert json.loads((tmp_path / "blessing.json").read_text()) == blessing


def test_absolute_thresholds_refuse_and_still_write_the_reason(evaluate_settings, tmp_path):
    strict = dataclasses.replace(evaluate_settings, min_accuracy=0.9, max_loss=0.3)
    with pytest.raises(UserError, match=r"not blessed: accuracy 0.8500 fails >= evaluate.min_accuracy \(0.9000\); loss 0.4500 fails") as caught:
        run_gate(strict, write_metrics(tmp_path, METRICS), tmp_path / "blessing.json")
    assert "\n" not in str(caught.value)
    blessing = json.loads((tmp_path / "blessing.json").read_text())
    assert not blessing["blessed"] and [check["passed"] for check in blessing["checks"]] == [False, False]
    with pytest.raises(UserError, match="refusing an unblessed model"):
        require_blessing(tmp_path / "blessing.json")


def test_baseline_file_allows_a_small_regression_only(evaluate_settings, tmp_path):
    baseline = write_metrics(tmp_path / "baseline", {"accuracy": 0.86, "loss": 0.4})
    relative = dataclasses.replace(evaluate_settings, baseline=str(baseline), max_accuracy_regression=0.02)
    assert run_gate(relative, write_metrics(tmp_path / "now", METRICS), tmp_path / "blessing.json")["blessed"]
    tight = dataclasses.replace(relative, max_accuracy_regression=0.0)
    with pytest.raises(UserError, match=r"accuracy 0.8500 fails >= baseline accuracy - evaluate.max_accuracy_regression \(0.8600\)"):
        run_gate(tight, write_metrics(tmp_path / "now", METRICS), tmp_path / "blessing.json")
    with pytest.raises(UserError, match=r"baseline metrics .*missing.json not found: set evaluate.baseline"):
        load_baseline(str(tmp_path / "missing.json"), tmp_path / "now" / "metrics.json")


def test_baseline_from_a_git_revision(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "README").write_text("first commit: no metrics yet\n")
    subprocess.run([*git, "add", "README"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "start"], cwd=tmp_path, check=True)
    metrics = write_metrics(tmp_path / "reports", {"accuracy": 0.97, "loss": 0.1})
    assert load_baseline("git:HEAD", metrics) == (None, "no baseline: metrics.json is not committed at HEAD")  # a first run
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "baseline"], cwd=tmp_path, check=True)
    write_metrics(tmp_path / "reports", METRICS)  # this run's (worse) metrics, not committed
    baseline, source = load_baseline("git:HEAD", metrics)
    assert baseline["accuracy"] == 0.97 and source == "metrics.json at git HEAD"
    with pytest.raises(UserError, match=r"cannot read the baseline git:nope .*set evaluate.baseline to git:<an existing revision>"):
        load_baseline("git:nope", metrics)


def test_gate_stage_exits_non_zero_with_one_line(tmp_path):
    write_metrics(tmp_path / "reports", METRICS)
    refused = run_stage("gate", *tmp_paths(tmp_path), "evaluate.min_accuracy=0.99")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()] and "not blessed: accuracy 0.8500" in refused.stderr
    assert json.loads((tmp_path / "reports" / "blessing.json").read_text())["blessed"] is False
    blessed = run_stage("gate", *tmp_paths(tmp_path))
    assert blessed.returncode == 0, blessed.stderr
    assert json.loads((tmp_path / "reports" / "blessing.json").read_text())["blessed"] is True
