"""`dvc repro` and `dvc exp run` on the smoke preset in a temporary git copy of the repository."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.processes import dvc, experiments_by_name

pytestmark = pytest.mark.slow

STAGES = ("compose", "ingest", "preprocess", "train", "evaluate", "gate", "export")


def ran(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", result.stdout))


def set_smoke_epochs(repo: Path, epochs: int) -> None:
    preset = repo / "conf" / "experiment" / "smoke.yaml"
    preset.write_text(re.sub(r"epochs: \d+", f"epochs: {epochs}", preset.read_text()))


@pytest.fixture
def smoke_repo(git_copy):
    """The copy with the smoke preset selected in conf/ (the only source of defaults)."""
    config = git_copy / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("- experiment: null", "- experiment: smoke"))
    return git_copy


def test_repro_reruns_exactly_what_a_change_touches_survives_sigkill_and_experiments_work(
    smoke_repo,
):
    repo = smoke_repo
    before = git_status(repo)  # the fixture's edit of conf/config.yaml
    first = dvc(repo, "repro")
    assert ran(first) == set(STAGES)
    left = git_status(repo) - before
    assert {path for path in left if path not in ("dvc.lock", "params.yaml")} == set(), (
        f"dvc repro left files git sees besides dvc.lock and params.yaml: {sorted(left)} (a DVC output must be "
        "cached, so DVC git-ignores it, or listed in its folder's .gitignore)"
    )
    assert stages_a_code_change_marks(repo, "stages/gate.py") == {"gate"}
    assert stages_a_code_change_marks(repo, "pipeline/data/shards.py") >= {
        "preprocess",
        "train",
        "evaluate",
        "export",
    }
    assert stages_a_code_change_marks(repo, "pipeline/export/tflite.py") == {"export"}
    # users' model code is imported by dotted path (model.builder): listed on purpose for the stages that load it
    assert stages_a_code_change_marks(repo, "user_models/examples.py") == {
        "train",
        "evaluate",
        "export",
    }
    assert (
        "Recomposed params.yaml from conf/" in first.stdout
    )  # the preset changed conf/: never a stale file
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert {"accuracy", "loss"} <= set(metrics)
    report = json.loads((repo / "exports" / "report.json").read_text())
    assert all(
        check["max_abs_diff"] <= 1e-4 for check in report["artifacts"].values() if check["exact"]
    )
    assert all(check["accuracy_drop"] <= 0.01 for check in report["artifacts"].values())
    assert json.loads((repo / "reports" / "blessing.json").read_text())["blessed"], (
        "the defaults bless the smoke preset"
    )
    assert (repo / "exports" / "tfjs" / "model.json").is_file() and (
        repo / "exports" / "saved_model" / "saved_model.pb"
    ).is_file()

    again = dvc(repo, "repro")
    assert ran(again) == set(), again.stdout

    # SIGKILL the whole `dvc repro` mid-fit: nothing it leaves may pass for a finished train stage.
    set_smoke_epochs(repo, 40)
    kill_repro_mid_fit(repo, "epoch 3/40")
    assert not (repo / "models" / "model.keras").exists()
    assert "train" in json.loads(dvc(repo, "status", "--json").stdout)

    # A changed train.epochs reruns compose and everything downstream of train, never ingest or preprocess.
    set_smoke_epochs(repo, 3)
    changed = dvc(repo, "repro")
    assert ran(changed) == {"compose", "train", "evaluate", "gate", "export"}, changed.stdout
    assert json.loads((repo / "models" / "history.json").read_text())["epochs"] == [1, 2, 3]
    assert json.loads(dvc(repo, "status", "--json").stdout) == {}
    assert "accuracy" in dvc(repo, "metrics", "show", "--json").stdout
    assert training_curves(repo) == {
        "models/curves/loss.csv": 6,
        "models/curves/accuracy.csv": 6,  # train + val, 3 epochs
        "models/learning_rate.csv": 3,
        "reports/confusion.csv": None,
    }

    # A group swap and a key change in one experiment.
    dvc(repo, "exp", "run", "-n", "cnn-fast", "-S", "model=cnn", "-S", "train.learning_rate=0.003")
    params, metrics = experiments_by_name(repo)["cnn-fast"]
    assert (
        params["model"]["name"] == "cnn"
        and params["train"]["learning_rate"] == 0.003
        and "accuracy" in metrics
    )

    # A user's model as a DVC experiment: the builder, and a params key its conf file does not declare.
    builder = "model.builder=user_models.examples:subclassed_mlp"
    dvc(
        repo,
        "exp",
        "run",
        "-n",
        "custom",
        "-S",
        "model=custom",
        "-S",
        builder,
        "-S",
        "++model.params.width=24",
    )
    params, metrics = experiments_by_name(repo)["custom"]
    assert (
        params["model"]["builder"] == builder.split("=", 1)[1]
        and params["model"]["params"]["width"] == 24
    )
    assert "accuracy" in metrics


def training_curves(repo: Path) -> dict[str, int | None]:
    """``dvc plots show``'s plots: the number of points of each per-epoch curve (None for the confusion matrix)."""
    shown = json.loads(dvc(repo, "plots", "show", "--json").stdout)
    assert not shown.get("errors"), shown["errors"]
    points = {}
    for name, renders in shown["data"].items():
        values = renders[0]["content"]["data"]["values"]
        points[name] = len(values) if all("epoch" in value for value in values) else None
    return points


def git_status(repo: Path) -> set[str]:
    """The paths ``git status --porcelain`` lists (modified or untracked) in ``repo``."""
    porcelain = subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True
    )
    return {line[3:] for line in porcelain.stdout.splitlines()}


def stages_a_code_change_marks(repo: Path, module: str) -> set[str]:
    """The stages ``dvc status`` reports as changed once a comment is appended to ``module`` (restored after)."""
    path = repo / module
    original = path.read_text()
    path.write_text(original + "# a change\n")
    try:
        return set(json.loads(dvc(repo, "status", "--json").stdout))
    finally:
        path.write_text(original)


def kill_repro_mid_fit(repo: Path, line: str) -> None:
    """Start ``dvc repro`` in its own session and SIGKILL the session once ``line`` was printed."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("dvc")), "repro"],
        cwd=repo,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    seen = []
    deadline = time.monotonic() + 600
    for output in process.stdout:
        seen.append(output)
        if line in output or time.monotonic() > deadline:
            break
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert any(line in output for output in seen), "".join(seen)
