"""The model gate: absolute and baseline-relative thresholds, the blessing file, the stage's exit code."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.config import compose, run_stage, tmp_paths
from pipeline.errors import UserError
from pipeline.evaluation.blessing import require_blessing
from pipeline.evaluation.gate import load_baseline, run_gate

METRICS = {"accuracy": 0.85, "loss": 0.45, "f1_macro": 0.84}


@pytest.fixture
def gate_settings():
    return compose("experiment=smoke").gate


def write_metrics(directory: Path, metrics: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory / "metrics.json"


def test_defaults_bless_a_smoke_run_and_say_why(gate_settings, tmp_path):
    assert gate_settings.min_accuracy == 0.5 and gate_settings.baseline is None
    blessing = run_gate(gate_settings, write_metrics(tmp_path, METRICS), tmp_path / "blessing.json")
    assert blessing["blessed"] and blessing["reason"].startswith(
        "blessed: accuracy 0.8500 passes >= gate.min_accuracy (0.5000)"
    )
    assert json.loads((tmp_path / "blessing.json").read_text()) == blessing


def test_absolute_thresholds_refuse_and_still_write_the_reason(gate_settings, tmp_path):
    strict = dataclasses.replace(gate_settings, min_accuracy=0.9, max_loss=0.3)
    with pytest.raises(
        UserError,
        match=r"not blessed: accuracy 0.8500 fails >= gate.min_accuracy \(0.9000\); loss 0.4500 fails",
    ) as caught:
        run_gate(strict, write_metrics(tmp_path, METRICS), tmp_path / "blessing.json")
    assert "\n" not in str(caught.value)
    blessing = json.loads((tmp_path / "blessing.json").read_text())
    assert not blessing["blessed"] and [check["passed"] for check in blessing["checks"]] == [
        False,
        False,
    ]
    with pytest.raises(UserError, match="refusing an unblessed model"):
        require_blessing(tmp_path / "blessing.json")


def test_baseline_file_allows_a_small_regression_only(gate_settings, tmp_path):
    baseline = write_metrics(tmp_path / "baseline", {"accuracy": 0.86, "loss": 0.4})
    relative = dataclasses.replace(
        gate_settings, baseline=str(baseline), max_accuracy_regression=0.02
    )
    assert run_gate(relative, write_metrics(tmp_path / "now", METRICS), tmp_path / "blessing.json")[
        "blessed"
    ]
    tight = dataclasses.replace(relative, max_accuracy_regression=0.0)
    with pytest.raises(
        UserError,
        match=r"accuracy 0.8500 fails >= baseline accuracy - gate.max_accuracy_regression \(0.8600\)",
    ):
        run_gate(tight, write_metrics(tmp_path / "now", METRICS), tmp_path / "blessing.json")
    with pytest.raises(
        UserError, match=r"baseline metrics .*missing.json not found: set gate.baseline"
    ):
        load_baseline(str(tmp_path / "missing.json"), tmp_path / "now" / "metrics.json")


def git_repo(root: Path) -> Callable[[str], None]:
    """A fresh git repository at ``root`` with one empty commit; returns ``commit(message)`` (adds everything)."""
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)

    def commit(message: str) -> None:
        subprocess.run(["git", "add", "-A"], cwd=root, check=True)
        subprocess.run(
            ["git", *identity, "commit", "-q", "--allow-empty", "-m", message], cwd=root, check=True
        )

    commit("start: no metrics yet")
    return commit


def test_baseline_from_a_git_revision_of_a_git_tracked_file(tmp_path):
    commit = git_repo(tmp_path)
    metrics = write_metrics(tmp_path / "reports", {"accuracy": 0.97, "loss": 0.1})
    assert load_baseline("git:HEAD", metrics) == (
        None,
        "no baseline: reports/metrics.json is neither in git nor a DVC output at HEAD",
    )
    commit("baseline")
    write_metrics(tmp_path / "reports", METRICS)  # this run's (worse) metrics, not committed
    baseline, source = load_baseline("git:HEAD", metrics)
    assert baseline["accuracy"] == 0.97 and source == "reports/metrics.json at git HEAD"
    with pytest.raises(
        UserError,
        match=r"^gate: cannot read the baseline git:nope: unknown git revision 'nope': set gate.baseline",
    ):
        load_baseline("git:nope", metrics)
    outside = write_metrics(tmp_path.parent / f"{tmp_path.name}-no-git", METRICS)
    with pytest.raises(
        UserError, match=r"gate.baseline=git:HEAD but .* is not inside a git repository"
    ):
        load_baseline("git:HEAD", outside)


def test_baseline_from_a_git_revision_of_a_dvc_cached_output(tmp_path, monkeypatch):
    """The default layout: reports/metrics.json is a DVC-cached metric (git-ignored, recorded in dvc.lock)."""
    from dvc.repo import Repo

    commit = git_repo(tmp_path)
    (tmp_path / "seed.json").write_text(json.dumps({"accuracy": 0.97, "loss": 0.1}))
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  evaluate:\n    cmd: mkdir -p reports && cp seed.json reports/metrics.json\n"
        "    deps: [seed.json]\n    metrics: [reports/metrics.json]\n"
    )
    monkeypatch.chdir(tmp_path)  # DVC resolves the default dvc.yaml against the working directory
    Repo.init(str(tmp_path))
    with Repo(str(tmp_path)) as repo:
        repo.reproduce()
    commit("baseline run")
    metrics = tmp_path / "reports" / "metrics.json"
    assert "metrics.json" in (tmp_path / "reports" / ".gitignore").read_text(), (
        "DVC owns it, git does not"
    )
    write_metrics(tmp_path / "reports", METRICS)  # this run's (worse) metrics
    baseline, source = load_baseline("git:HEAD", metrics)
    assert baseline["accuracy"] == 0.97 and source == "reports/metrics.json at git HEAD"
    assert (
        load_baseline("git:HEAD~1", metrics)[0] is None
    )  # before the first run: passes as a first run
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    with pytest.raises(
        UserError,
        match=r"at HEAD is a DVC output whose data is not in the DVC cache: run `dvc fetch --rev HEAD`",
    ):
        load_baseline("git:HEAD", metrics)


def test_gate_stage_exits_non_zero_with_one_line(tmp_path):
    write_metrics(tmp_path / "reports", METRICS)
    refused = run_stage("gate", *tmp_paths(tmp_path), "gate.min_accuracy=0.99")
    assert refused.returncode == 2, refused.stderr
    assert (
        refused.stderr.strip().splitlines() == [refused.stderr.strip()]
        and "not blessed: accuracy 0.8500" in refused.stderr
    )
    assert json.loads((tmp_path / "reports" / "blessing.json").read_text())["blessed"] is False
    blessed = run_stage("gate", *tmp_paths(tmp_path))
    assert blessed.returncode == 0, blessed.stderr
    assert json.loads((tmp_path / "reports" / "blessing.json").read_text())["blessed"] is True
