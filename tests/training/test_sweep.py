"""Sweeps: trial records and the summary table (unit), and Hydra multiruns through the train stage:
a grid with a failing trial, an Optuna study whose trials run concurrently on the two-node loopback
cluster (conftest.two_node_cluster) and that resumes from its sqlite storage, a trial whose Ray task
is killed, and sweeps refused before any trial starts."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.config import REPO, compose, run_stage
from helpers.processes import watched_lines
from pipeline.errors import UserError
from pipeline.training.hparams import read_hparams
from pipeline.training.sweep import (
    objective_value,
    queue_commands,
    rerun_commands,
    start_sweep,
    trial_number,
    write_summary,
    write_trial,
)


def fake_trial(
    sweep: Path, number: int, status: str, value: float | None, overrides: list[str]
) -> None:
    folder = sweep / str(number)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"trial": number}))
    record = {
        "trial": number,
        "status": status,
        "overrides": overrides,
        "choices": {"model": "mlp", "experiment": None},
    }
    record.update({"objective": value} if status == "completed" else {"error": "boom"})
    write_trial(folder, record)


@pytest.mark.parametrize("direction,best", [("minimize", 2), ("maximize", 0)])
def test_summary_sorts_by_objective_failed_last_and_saves_the_best(tmp_path, direction, best):
    sweep = tmp_path / "lr"
    fake_trial(
        sweep, 0, "completed", 0.9, ["train.learning_rate=0.1", "paths.models=/x", "sweep.name=lr"]
    )
    fake_trial(sweep, 1, "failed", None, ["train.learning_rate=-1"])
    fake_trial(
        sweep, 2, "completed", 0.3, ["train.learning_rate=0.01", "hparams_search=mlp_optuna"]
    )
    assert write_summary(sweep, "val_loss", direction)["trial"] == best
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [row["trial"] for row in rows] == ([str(best), str(2 - best), "1"])
    assert rows[-1]["status"] == "failed" and rows[-1]["error"] == "boom"
    assert yaml.safe_load((sweep / "best.yaml").read_text()) == {"trial": best}
    command = json.loads((sweep / "best.json").read_text())["commands"]["dvc"]
    lr = "0.01" if best == 2 else "0.1"
    assert (
        command == f"dvc exp run -S model=mlp -S train.learning_rate={lr}"
    )  # paths, sweep keys and the preset dropped
    assert "| 1 | failed |" in (sweep / "summary.md").read_text()


def test_summary_with_only_failed_trials_has_no_best(tmp_path):
    fake_trial(tmp_path, 0, "failed", None, [])
    assert write_summary(tmp_path, "val_loss", "minimize") is None
    assert not (tmp_path / "best.yaml").exists()


def test_queue_commands_turn_completed_trials_into_named_dvc_experiments_best_first(tmp_path):
    sweep = tmp_path / "lr"
    fake_trial(sweep, 0, "completed", 0.9, ["train.learning_rate=0.1", "paths.models=/x"])
    fake_trial(sweep, 1, "failed", None, ["train.learning_rate=-1"])
    fake_trial(
        sweep, 2, "completed", 0.3, ["train.learning_rate=0.01", "model.hidden_units=[64,64]"]
    )
    start_sweep(sweep, "maximize")
    assert [command[5] for command in queue_commands(sweep)] == ["lr-trial-0", "lr-trial-2"]
    start_sweep(sweep, "minimize")
    assert queue_commands(sweep, target="evaluate") == [
        [
            "dvc",
            "exp",
            "run",
            "--queue",
            "-n",
            "lr-trial-2",
            "-S",
            "model=mlp",
            "-S",
            "train.learning_rate=0.01",
            "-S",
            "model.hidden_units=[64,64]",
            "evaluate",
        ],
        [
            "dvc",
            "exp",
            "run",
            "--queue",
            "-n",
            "lr-trial-0",
            "-S",
            "model=mlp",
            "-S",
            "train.learning_rate=0.1",
            "evaluate",
        ],
    ]
    assert len(queue_commands(sweep, top=1)) == 1
    with pytest.raises(UserError, match="holds no trials"):
        queue_commands(tmp_path / "empty")


def test_trial_numbers_continue_across_runs_of_a_sweep(tmp_path):
    assert start_sweep(tmp_path) == 0 and trial_number(tmp_path, 1) == 1
    (tmp_path / "0").mkdir(), (tmp_path / "1").mkdir()
    assert start_sweep(tmp_path) == 2 and trial_number(tmp_path, 0) == 2


def test_objective_lookup_lists_available_metrics():
    assert objective_value({"val_loss": 0.5, "epochs": 3}, "val_loss") == 0.5
    with pytest.raises(
        UserError,
        match="sweep.objective='val_auc' is not a metric of this run: choose one of loss, val_loss",
    ):
        objective_value({"loss": 1.0, "val_loss": 0.5, "epochs": 3}, "val_auc")


def test_rerun_command_quotes_lists():
    assert (
        rerun_commands(["model.hidden_units=[64,64]"])["dvc"]
        == "dvc exp run -S 'model.hidden_units=[64,64]'"
    )


@pytest.mark.parametrize(
    "override,expected",
    [
        (
            "sweep.objective=val_auc",
            "sweep.objective='val_auc' is invalid: expected one of loss, accuracy, val_loss, val_accuracy",
        ),
        (
            "sweep.direction=up",
            "sweep.direction='up' is invalid: expected one of minimize, maximize",
        ),
        ("sweep.name=a/b", "sweep.name='a/b' is invalid"),
    ],
)
def test_bad_sweep_settings_fail_naming_the_key(override, expected):
    with pytest.raises(UserError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        compose(override)


@pytest.mark.parametrize(
    "preset", sorted(path.stem for path in (REPO / "conf" / "hparams_search").glob("*.yaml"))
)
def test_every_search_preset_composes_and_passes_the_sweep_check(preset):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from stages._config import CONF_DIR, to_settings
    from stages._sweep import check_sweep

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(
            "config", overrides=[f"hparams_search={preset}"], return_hydra_config=True
        )
    assert cfg.sweep.name == preset and "optuna" in cfg.hydra.sweeper._target_
    assert cfg.hydra.sweeper.storage.startswith("sqlite:///") and cfg.hydra.sweeper.params
    check_sweep(cfg, to_settings)


def test_a_job_that_died_without_a_record_is_recorded_as_a_failed_trial(tmp_path):
    """What the Ray trials launcher reports for a trial whose Ray task died (stages/_sweep.SweepCallback.on_job_end)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import open_dict
    from ray.exceptions import RayTaskError

    from stages._config import CONF_DIR
    from stages._sweep import SweepCallback

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(
            "config",
            overrides=[
                "model=mlp",
                "train.learning_rate=0.5",
                f"sweep.dir={tmp_path}",
                "sweep.name=s",
            ],
            return_hydra_config=True,
        )
    start_sweep(tmp_path / "s")
    with open_dict(cfg):
        cfg.hydra.job.num = 1
        cfg.hydra.mode = "RUN"
    callback = SweepCallback()
    callback.on_job_end(
        config=cfg,
        job_return=JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("one run")),
    )
    assert not trials(tmp_path / "s"), "a single run's failure is not a sweep trial"
    cfg.hydra.mode = "MULTIRUN"
    raised = RayTaskError(
        "_run_trial",
        "Traceback (most recent call last):\n  ...\nOSError: disk\nfull",
        OSError("disk\nfull"),
    )
    callback.on_job_end(
        config=cfg, job_return=JobReturn(status=JobStatus.COMPLETED, _return_value=0.1)
    )
    assert not trials(tmp_path / "s"), "a completed job is run_trial's to record"
    callback.on_job_end(
        config=cfg,
        job_return=JobReturn(status=JobStatus.FAILED, _return_value=raised.as_instanceof_cause()),
    )
    record = trials(tmp_path / "s")[1]
    assert (
        record["status"] == "failed" and record["error"] == "OSError: disk full"
    )  # the task's own error, one line
    assert (
        record["overrides"][:2] == ["model=mlp", "train.learning_rate=0.5"]
        and record["choices"]["model"] == "mlp"
    )
    callback.on_job_end(
        config=cfg,
        job_return=JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("later")),
    )
    assert trials(tmp_path / "s")[1]["error"] == "OSError: disk full", "an existing record is kept"


# --- multiruns through the stage (subprocesses) ------------------------------------------------------------------


def sweep_overrides(processed: Path, root: Path, name: str) -> list[str]:
    return [
        "experiment=smoke",
        "train.epochs=1",
        "model=mlp",
        f"paths.processed={processed}",
        f"train.tensorboard_dir={root}/tensorboard",
        f"cluster.storage_dir={root}/ray",
        f"sweep.dir={root}/sweeps",
        f"sweep.name={name}",
    ]


def trials(sweep: Path) -> dict[int, dict]:
    return {
        int(path.parent.name): json.loads(path.read_text()) for path in sweep.glob("*/trial.json")
    }


@pytest.mark.slow
def test_grid_sweep_gives_each_trial_its_outputs_and_records_a_failed_one(
    digits_pipeline, tmp_path
):
    config, _ = digits_pipeline
    result = run_stage(
        "train",
        "-m",
        *sweep_overrides(Path(config.paths.processed), tmp_path, "grid"),
        "train.learning_rate=1e-2,1e-3,-1",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sweep = tmp_path / "sweeps" / "grid"
    records = trials(sweep)
    assert [records[n]["status"] for n in range(3)] == ["completed", "completed", "failed"]
    assert "train.learning_rate=-1.0 is invalid" in records[2]["error"]
    for number in (0, 1):
        assert (sweep / str(number) / "models" / "model.keras").is_file()
        run = json.loads((sweep / str(number) / "models" / "run.json").read_text())
        tensorboard_dir = Path(
            run["tensorboard_dir"]
        )  # <run name>-<start time>: a rerun never mixes into it
        assert (
            tensorboard_dir.parent == tmp_path / "tensorboard" / "grid"
            and tensorboard_dir.name.startswith(f"trial-{number}-")
        )
        hparams, finals = read_hparams(Path(run["tensorboard_dir"]))
        assert (
            hparams["train.learning_rate"] == pytest.approx([1e-2, 1e-3][number])
            and hparams["model.name"] == "mlp"
        )
        assert finals["final/val_loss"] == pytest.approx(records[number]["objective"], rel=1e-5)
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    values = [float(row["val_loss"]) for row in rows[:2]]
    assert values == sorted(values) and rows[2]["status"] == "failed"
    best = json.loads((sweep / "best.json").read_text())
    assert best["value"] == min(records[0]["objective"], records[1]["objective"])
    best_config = yaml.safe_load((sweep / "best.yaml").read_text())
    assert best_config["train"]["learning_rate"] == [1e-2, 1e-3][best["trial"]]
    assert f"-S train.learning_rate={[0.01, 0.001][best['trial']]}" in best["commands"]["dvc"]


def on_cluster(address: str) -> list[str]:
    """Trials on conftest's two-node loopback cluster (4 CPUs): 1 Ray Train worker + its controller each."""
    return ["cluster=address", f"cluster.address={address}", "cluster.num_workers=1"]


@pytest.mark.slow
def test_optuna_trials_run_concurrently_on_ray_and_a_rerun_resumes_the_stored_study(
    two_node_cluster, digits_pipeline, tmp_path
):
    config, _ = digits_pipeline
    overrides = [
        *sweep_overrides(Path(config.paths.processed), tmp_path, "tpe"),
        *on_cluster(two_node_cluster),
        "hparams_search=mlp_optuna",
    ]
    first = run_stage(
        "train",
        "-m",
        *overrides,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=ray_trials",
        "hydra.launcher.parallel=2",
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Launching 2 trials on Ray, 2 at a time" in first.stdout + first.stderr
    ran = trials(tmp_path / "sweeps" / "tpe")
    # each trial's record times its whole run (config to final metrics): the two trials overlapped on the cluster
    assert max(record["started"] for record in ran.values()) < min(
        record["finished"] for record in ran.values()
    ), ran
    for record in ran.values():  # each trial had its own Ray Train run and outputs
        # a finished Ray Train run is set aside as <run name>.<time> (pipeline.training.train), so a rerun starts afresh
        assert list((tmp_path / "ray" / "tpe").glob(f"trial-{record['trial']}.*")), sorted(
            (tmp_path / "ray" / "tpe").iterdir()
        )
        assert (
            tmp_path / "sweeps" / "tpe" / str(record["trial"]) / "models" / "model.keras"
        ).is_file()
    database = tmp_path / "sweeps" / "tpe" / "optuna.db"
    query = "SELECT number, state FROM trials ORDER BY number"
    assert sqlite3.connect(database).execute(query).fetchall() == [(0, "COMPLETE"), (1, "COMPLETE")]
    # The rerun continues the stored study; its trial fails (no data) and is recorded, not fatal.
    missing_data = [
        *sweep_overrides(tmp_path / "missing", tmp_path, "tpe"),
        *on_cluster(two_node_cluster),
        "hparams_search=mlp_optuna",
    ]
    second = run_stage("train", "-m", *missing_data, "hydra.sweeper.n_trials=1")
    assert second.returncode == 0, second.stdout + second.stderr
    assert sqlite3.connect(database).execute(query).fetchall() == [
        (0, "COMPLETE"),
        (1, "COMPLETE"),
        (2, "FAIL"),
    ]
    records = trials(tmp_path / "sweeps" / "tpe")
    assert [records[n]["status"] for n in range(3)] == ["completed", "completed", "failed"]
    assert "meta.json is missing" in records[2]["error"]
    best = json.loads((tmp_path / "sweeps" / "tpe" / "best.json").read_text())
    assert best["trial"] in (0, 1) and math.isfinite(best["value"])
    assert (
        "-S model=mlp" in best["commands"]["dvc"]
        and "hparams_search" not in best["commands"]["dvc"]
    )


@pytest.mark.slow
def test_a_trial_whose_process_is_killed_is_recorded_failed_and_the_sweep_goes_on(
    two_node_cluster, digits_pipeline, tmp_path
):
    """Trial 0's Ray task is SIGKILLed as it starts; one trial at a time, so trial 1 only starts
    after the crash was handled. Trial 1 fails in the stage (bad learning rate); both are summarised."""
    config, _ = digits_pipeline
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    stage = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stages.train",
            "-m",
            *sweep_overrides(Path(config.paths.processed), tmp_path, "crash"),
            *on_cluster(two_node_cluster),
            "train.learning_rate=1e-2,-1",
            "hydra/launcher=ray_trials",
            "hydra.launcher.parallel=1",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, killed = [], None
    for line in watched_lines(stage, 300):
        lines.append(line)
        # Ray prefixes a task's forwarded output with its process: "(_run_trial pid=123, ip=...) Sweep crash trial 0: ..."
        if killed is None and (
            match := re.search(r"\(_run_trial pid=(\d+).*Sweep crash trial 0:", line)
        ):
            killed = int(match.group(1))
            os.kill(killed, signal.SIGKILL)
    output = "".join(lines)
    assert stage.wait(timeout=120) == 0 and killed is not None, output[-3000:]
    records = trials(tmp_path / "sweeps" / "crash")
    assert [records[n]["status"] for n in (0, 1)] == ["failed", "failed"], output[-3000:]
    assert (
        records[0]["error"].startswith("WorkerCrashedError: The worker died unexpectedly")
        and "\n" not in records[0]["error"]
    )
    assert (
        "train.learning_rate=0.01" in records[0]["overrides"]
        and "train.learning_rate=-1.0 is invalid" in records[1]["error"]
    )
    rows = list(csv.DictReader((tmp_path / "sweeps" / "crash" / "summary.csv").open()))
    assert [(row["trial"], row["status"]) for row in rows] == [("0", "failed"), ("1", "failed")]
    assert "| 0 | failed |" in (tmp_path / "sweeps" / "crash" / "summary.md").read_text()


# --- bad input: one line, exit 2, no trial started ---------------------------------------------------------------


def assert_refused(result, sweep: Path, *fragments: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr, (
        result.stdout + result.stderr
    )
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not list(sweep.glob("*/trial.json")), "no trial may start"


def write_preset(directory: Path, params: str) -> Path:
    (directory / "hparams_search").mkdir(parents=True)
    (directory / "hparams_search" / "bad.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\nhydra:\n  sweeper:\n"
        + params
    )
    return directory


@pytest.mark.parametrize(
    "params,fragments",
    [
        ("    params: {}\n", ["search space hydra.sweeper.params is empty"]),
        (
            "    params:\n      train.learning_rate: interval(1e-4\n",
            ["search space 'train.learning_rate: interval(1e-4' is malformed"],
        ),
        (
            "    params:\n      train.learning_rat: interval(1e-4, 1e-1)\n",
            ["search-space key 'train.learning_rat' is not in the config"],
        ),
        (
            "    params:\n      train.learning_rate: 0.1\n",
            ["is a single value, not a range or choice"],
        ),
    ],
)
def test_bad_search_space_is_refused_before_any_trial(tmp_path, params, fragments):
    conf = write_preset(tmp_path / "conf", params)
    result = run_stage(
        "train", "-m", "-cd", str(conf), "hparams_search=bad", f"sweep.dir={tmp_path}/sweeps"
    )
    assert_refused(result, tmp_path / "sweeps", *fragments)


def test_unknown_objective_is_refused_listing_the_available_ones(tmp_path):
    result = run_stage(
        "train",
        "-m",
        "model=mlp",
        "train.learning_rate=1e-3,1e-2",
        "sweep.objective=val_auc",
        f"sweep.dir={tmp_path}/sweeps",
    )
    assert_refused(
        result,
        tmp_path / "sweeps",
        "sweep.objective='val_auc'",
        "loss, accuracy, val_loss, val_accuracy",
    )


@pytest.mark.slow
@pytest.mark.ray
def test_more_parallel_trials_than_cpus_is_refused(tmp_path):
    result = run_stage(
        "train",
        "-m",
        "model=mlp",
        "train.learning_rate=1e-3,1e-2,1e-1",
        "hydra/launcher=ray_trials",
        "hydra.launcher.parallel=3",
        "hydra.launcher.num_cpus=4",
        f"sweep.dir={tmp_path}/sweeps",
    )
    assert_refused(
        result, tmp_path / "sweeps", "hydra.launcher.parallel=3 trials need 6 CPUs", "has 4"
    )


@pytest.mark.slow
def test_more_parallel_trials_than_the_cluster_has_cpus_is_refused(two_node_cluster, tmp_path):
    result = run_stage(
        "train",
        "-m",
        "model=mlp",
        "train.learning_rate=1e-3,1e-2,1e-1",
        *on_cluster(two_node_cluster),
        "hydra/launcher=ray_trials",
        "hydra.launcher.parallel=3",
        f"sweep.dir={tmp_path}/sweeps",
    )
    assert_refused(
        result,
        tmp_path / "sweeps",
        "hydra.launcher.parallel=3 trials need 6 CPUs",
        f"the Ray cluster at {two_node_cluster} has 4",
    )


@pytest.mark.slow
def test_a_sweep_over_a_custom_models_params_gives_each_trial_its_width(digits_pipeline, tmp_path):
    """model.params are plain Hydra keys: `-m model.params.width=8,24` sweeps a user's builder."""
    config, _ = digits_pipeline
    result = run_stage(
        "train",
        "-m",
        *[
            item
            for item in sweep_overrides(Path(config.paths.processed), tmp_path, "widths")
            if item != "model=mlp"
        ],
        "model=custom",
        "model.builder=user_models.examples:subclassed_mlp",
        "model.params.width=8,24",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sweep = tmp_path / "sweeps" / "widths"
    records = trials(sweep)
    assert [records[n]["status"] for n in range(2)] == ["completed", "completed"]
    widths = []
    for number in (0, 1):
        trial_config = yaml.safe_load((sweep / str(number) / "config.yaml").read_text())
        widths.append(trial_config["model"]["params"]["width"])
        assert (sweep / str(number) / "models" / "model.keras").is_file()
    assert widths == [8, 24]
