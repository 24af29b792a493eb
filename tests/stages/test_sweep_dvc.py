"""A finished sweep's trials queued as DVC experiments (`dvc exp run --queue`), run by `dvc queue start`
and listed with their metrics by `dvc exp show`, in a temporary git copy of the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.processes import dvc, experiments_by_name
from pipeline.training.sweep import write_trial

pytestmark = pytest.mark.slow

# One completed trial runs through the queue (each costs a whole pipeline run); the unit tests in
# test_sweep.py cover turning several trials into named experiments, best first.
TRIALS = {0: ["experiment=smoke", "train.epochs=1", "train.learning_rate=0.01"]}


def wait_for_queue(repo: Path, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dvc(repo, "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            return status
        time.sleep(5)
    raise AssertionError(f"queue still busy after {timeout} s:\n{status}")


def test_sweep_trials_become_queued_dvc_experiments_with_metrics(git_copy):
    repo = git_copy
    sweep = repo / "sweeps" / "lr"
    for number, overrides in TRIALS.items():
        write_trial(
            sweep / str(number),
            {
                "trial": number,
                "status": "completed",
                "objective": 0.5 - number / 10,
                "overrides": [
                    *overrides,
                    f"paths.models=sweeps/lr/{number}/models",
                    "sweep.name=lr",
                ],
                "choices": {"model": "mlp", "experiment": "smoke"},
            },
        )
    write_trial(
        sweep / "1",
        {"trial": 1, "status": "failed", "overrides": ["train.learning_rate=-1"], "error": "boom"},
    )
    env = {**os.environ, "PYTHONPATH": str(repo)}
    queued = subprocess.run(
        [sys.executable, "-m", "stages.queue_sweep", "sweeps/lr", "--target", "evaluate"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert queued.returncode == 0, queued.stdout + queued.stderr
    assert "Queued 1 experiment:" in queued.stdout  # the failed trial is not queued
    assert dvc(repo, "queue", "status").stdout.count("Queued") == 1
    dvc(repo, "queue", "start", "-j", "1")
    try:
        status = wait_for_queue(repo)
    finally:
        dvc(repo, "queue", "stop")
    assert status.count("Success") == 1, status
    found = experiments_by_name(repo)
    assert "lr-trial-1" not in found
    params, metrics = found["lr-trial-0"]
    assert params["train"]["learning_rate"] == 0.01 and params["model"]["name"] == "mlp"
    assert (
        params["train"]["epochs"] == 1 and params["paths"]["models"] == "models"
    )  # sweep paths not carried over
    assert "accuracy" in metrics
