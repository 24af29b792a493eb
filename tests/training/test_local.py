"""One local worker without Ray (pipeline.training.local): which runs take it, the same model as
Ray Train, a driver that imports neither Ray nor TensorFlow, and Ray's guarantees kept: a killed
worker restarted from its checkpoint, failures beyond train.max_failures fatal, a killed stage's
worker gone with it and the rerun resumed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.config import REPO, assert_one_line_error, compose, run_stage, tmp_paths
from helpers.processes import start_stage, watched_lines
from pipeline.settings import TrainRequest
from pipeline.training.local import STATE_FILE, latest_checkpoint, write_checkpoint
from pipeline.training.train import run_train, uses_ray

LOCAL_WORKER = re.compile(r"worker 0/1 on this machine pid (\d+)")
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) ", re.MULTILINE)


@pytest.mark.parametrize(
    ("overrides", "environment", "storage", "expected"),
    [
        ([], {}, "logs/ray", False),
        (["cluster.launcher=ray"], {}, "logs/ray", True),
        (["cluster.num_workers=2"], {}, "logs/ray", True),
        (["cluster=address"], {}, "logs/ray", True),
        ([], {"RAY_ADDRESS": "10.0.0.5:6379"}, "logs/ray", True),  # as `ray job submit` sets it
        ([], {}, "s3://bucket/runs", True),
        (["cluster=gpu"], {}, "logs/ray", False),  # one GPU worker: the same child, on the GPU
    ],
)
def test_one_local_worker_trains_without_ray(
    overrides, environment, storage, expected, monkeypatch
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    assert uses_ray(compose(*overrides).cluster, storage) is expected


def test_the_child_gets_the_stage_s_import_path_once(monkeypatch, tmp_path):
    from pipeline.training.local import _child_env

    extra = str(tmp_path / "user_code")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([extra, str(REPO)]))
    monkeypatch.setattr(sys, "path", [str(REPO), "", *sys.path])
    path = _child_env()["PYTHONPATH"].split(os.pathsep)
    assert path[0] == str(REPO) and extra in path and "" not in path
    assert len(path) == len(set(path))


def test_checkpoints_keep_the_newest_and_record_the_latest(tmp_path):
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
    model.compile(optimizer="adam", loss="mse")
    assert latest_checkpoint(tmp_path) == (0, None)
    for epoch in range(1, 5):
        write_checkpoint(tmp_path, epoch, model, {"epochs": list(range(1, epoch + 1))}, (), keep=2)
    assert sorted(path.name for path in tmp_path.glob("checkpoint_*")) == [
        "checkpoint_000003",
        "checkpoint_000004",
    ]
    assert latest_checkpoint(tmp_path) == (4, tmp_path / "checkpoint_000004")
    shutil.rmtree(tmp_path / "checkpoint_000004")  # a state file naming a missing checkpoint
    assert latest_checkpoint(tmp_path) == (0, None)
    (tmp_path / STATE_FILE).write_text("{not json")
    assert latest_checkpoint(tmp_path) == (0, None)


def mlp(root: Path, processed: str, *extra: str) -> list[str]:
    return [
        *tmp_paths(root),
        f"paths.processed={processed}",
        "model=mlp",
        "train.early_stopping.enabled=false",
        *extra,
    ]


@pytest.mark.slow
@pytest.mark.ray
def test_the_local_worker_trains_what_ray_trains_and_the_driver_imports_neither(
    digits_pipeline, tmp_path
):
    processed = digits_pipeline[0].paths.processed
    local = mlp(tmp_path / "local", processed, "train.epochs=3")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from helpers.config import compose\n"
        "from pipeline.settings import TrainRequest\n"
        "from pipeline.training.train import run_train\n"
        f"config = compose(*{local!r})\n"
        "run_train(TrainRequest.from_config(config), Path(config.paths.processed), "
        "Path(config.paths.models), Path(config.train.tensorboard_dir), config.cluster.storage_dir)\n"
        "print('imported:', sorted({'ray', 'tensorflow'} & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "imported: []" in result.stdout, result.stdout[-2000:]
    assert "(no Ray: one local worker)" in result.stdout
    config = compose(*mlp(tmp_path / "ray", processed, "train.epochs=3", "cluster.launcher=ray"))
    run_train(
        TrainRequest.from_config(config),
        Path(processed),
        Path(config.paths.models),
        Path(config.train.tensorboard_dir),
        config.cluster.storage_dir,
    )
    runs = {
        name: json.loads((tmp_path / name / "models" / "run.json").read_text())
        for name in ("local", "ray")
    }
    assert runs["local"]["launcher"] == "local" and runs["ray"]["launcher"] == "ray"
    histories = {
        name: json.loads((tmp_path / name / "models" / "history.json").read_text())
        for name in ("local", "ray")
    }
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert histories["local"][key] == pytest.approx(histories["ray"][key], rel=1e-6), key
    # the finished local run is set aside with its newest train.keep_checkpoints checkpoints
    (aside,) = (tmp_path / "local" / "ray").iterdir()
    assert sorted(path.name for path in aside.glob("checkpoint_*")) == [
        "checkpoint_000002",
        "checkpoint_000003",
    ]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_killed_workers_restart_from_their_checkpoint_and_a_killed_stage_resumes(
    digits_pipeline, tmp_path
):
    epochs = 8
    processed = digits_pipeline[0].paths.processed
    overrides = mlp(tmp_path, processed, f"train.epochs={epochs}", "train.max_failures=1")

    # 1. the worker is killed twice: restarted from its checkpoint once, then the run fails
    stage, lines, killed = start_stage(*overrides), [], []
    for line in watched_lines(stage, 600):
        lines.append(line)
        if (match := EPOCH_LINE.search(line)) and int(match.group(1)) >= 2 + 2 * len(killed):
            pid = int(LOCAL_WORKER.findall("".join(lines))[-1])
            if pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    output = "".join(lines)
    assert stage.wait(timeout=60) == 2 and len(killed) == 2, output[-3000:]
    assert re.search(
        r"The training process was killed by SIGKILL; restarting it from the checkpoint of epoch "
        r"[1-9] \(restart 1 of 1\)",
        output,
    ), output[-3000:]
    assert "Resuming from the checkpoint of epoch" in output
    assert "Traceback" not in output  # one line: what failed, where its checkpoint is, what to do
    assert re.search(
        r"error: training failed: the training process was killed by SIGKILL \(2 time\(s\), "
        r"train.max_failures=1\); its last checkpoint \(epoch [3-9]\) is in .*: rerun the stage",
        output,
    ), output[-3000:]
    assert not (tmp_path / "models").exists()

    # 2. the rerun resumes; its stage process (only it) is killed: the worker dies with it
    stage, lines = start_stage(*overrides), []
    for line in watched_lines(stage, 600):
        lines.append(line)
        if EPOCH_LINE.search(line):
            worker = int(LOCAL_WORKER.findall("".join(lines))[-1])
            os.kill(stage.pid, signal.SIGKILL)
            break
    stage.wait(timeout=30)
    output = "".join(lines)
    assert re.search(r"Resuming run mlp-digits-\w+ from its checkpoint of epoch [3-9]", output), (
        output
    )
    deadline = time.monotonic() + 20
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker), "the worker outlived its stage"

    # 3. the next rerun finishes the run: every epoch once in the history, the rest trained now
    done = run_stage("train", *overrides)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    run = json.loads((tmp_path / "models" / "run.json").read_text())
    assert run["launcher"] == "local" and run["resumed_from_epoch"] >= 3
    trained = [int(number) for number, _ in EPOCH_LINE.findall(done.stdout)]
    assert trained == list(range(run["resumed_from_epoch"] + 1, epochs + 1)), output[-3000:]
    history = json.loads((tmp_path / "models" / "history.json").read_text())
    assert history["epochs"] == list(range(1, epochs + 1))


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_use_gpu_without_a_gpu_is_one_line_from_the_worker(digits_pipeline, tmp_path):
    processed = digits_pipeline[0].paths.processed
    result = run_stage("train", *mlp(tmp_path, processed, "train.epochs=1", "cluster=gpu"))
    assert_one_line_error(result, "cluster.use_gpu=true but TensorFlow sees no GPU on this machine")
    assert not (tmp_path / "models").exists()
