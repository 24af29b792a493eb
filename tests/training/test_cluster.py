"""Cluster checks without Ray, and a real two-node Ray cluster on this machine: one worker per node,
a SIGKILLed worker recovered from its checkpoint, a killed driver resumed by rerunning the stage."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.config import REPO, compose, run_stage, tmp_paths
from helpers.processes import free_port, start_stage, watched_lines
from pipeline.errors import UserError
from pipeline.settings import TrainRequest
from pipeline.training.cluster import check_capacity, check_reachable
from pipeline.training.train import default_run_name, plan_run, run_train, scaled_train_settings

WORKER_LINE = re.compile(r"worker (\d+)/(\d+) on node ([0-9a-f]+) pid (\d+)")
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) ")
EPOCHS = 12


def request_for(config) -> TrainRequest:
    return TrainRequest.from_config(config)


# --- without Ray -------------------------------------------------------------------------------


def test_unreachable_address_fails_fast_in_one_line(digits_pipeline, tmp_path):
    config, _ = digits_pipeline
    port = free_port()  # nothing listens there once the probe socket is closed
    config = compose(
        "experiment=smoke",
        *tmp_paths(tmp_path),
        "cluster=address",
        f"cluster.address=127.0.0.1:{port}",
        "cluster.connect_timeout=2",
        f"paths.processed={config.paths.processed}",
    )
    started = time.perf_counter()
    with pytest.raises(
        UserError, match=f"cannot reach Ray at cluster.address=127.0.0.1:{port}"
    ) as caught:
        run_train(
            request_for(config),
            Path(config.paths.processed),
            tmp_path / "models",
            tmp_path / "tb",
            str(tmp_path / "ray"),
        )
    # well under ray.init's own ~60 s of retries (the bound includes importing ray on a busy machine)
    assert time.perf_counter() - started < 20 and "\n" not in str(caught.value)
    assert not (tmp_path / "models").exists() and not (tmp_path / "ray").exists()


def test_reachable_address_passes_the_probe():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}", timeout=2)
        check_reachable(f"ray://127.0.0.1:{server.getsockname()[1]}", timeout=2)


@pytest.mark.parametrize(
    "overrides,resources,nodes,message",
    [
        (
            ["cluster.num_workers=4"],
            {"CPU": 2},
            1,
            "4 workers need 4 CPU but the Ray cluster has 2",
        ),
        (
            ["cluster.use_gpu=true"],
            {"CPU": 8},
            1,
            "cluster.use_gpu=true but the Ray cluster has no GPU",
        ),
        (
            ["cluster.num_workers=2", "cluster.use_gpu=true"],
            {"CPU": 8, "GPU": 1},
            1,
            "2 workers need 2 GPU but the Ray cluster has 1",
        ),
        (
            ["cluster.num_workers=2", "cluster.placement_strategy=STRICT_SPREAD"],
            {"CPU": 8},
            1,
            "STRICT_SPREAD puts each of 2 workers",
        ),
        (
            ["+cluster.resources_per_worker.node_a=1"],
            {"CPU": 8},
            1,
            "need 1 node_a but the Ray cluster has 0",
        ),
    ],
)
def test_capacity_check_names_what_is_missing(overrides, resources, nodes, message):
    cluster = compose(*overrides).cluster
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        check_capacity(cluster, resources, nodes)
    assert "\n" not in str(caught.value)
    check_capacity(compose().cluster, {"CPU": 1}, 1)  # the default fits a 1-CPU machine


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "cluster.placement_strategy=EVERYWHERE",
            "one of PACK, SPREAD, STRICT_PACK, STRICT_SPREAD",
        ),
        ("+cluster.resources_per_worker.CPU=2", "custom resources only"),
        ("train.keep_checkpoints=0", "train.keep_checkpoints=0 is invalid"),
        ("cluster.connect_timeout=0", "cluster.connect_timeout=0"),
    ],
)
def test_bad_cluster_settings_fail_before_any_worker(override, message):
    with pytest.raises(UserError, match=re.escape(message)):
        compose(override)


def test_presets_and_batch_semantics():
    gpu, address = compose("cluster=gpu").cluster, compose("cluster=address").cluster
    assert gpu.use_gpu and gpu.mixed_precision and gpu.xla and address.address == "auto"
    train = compose("train.learning_rate=0.01", "train.scale_lr_with_workers=true").train
    assert scaled_train_settings(train, 4).learning_rate == pytest.approx(0.04)
    assert scaled_train_settings(compose().train, 4).learning_rate == compose().train.learning_rate
    with pytest.raises(UserError, match="divisible by cluster.num_workers=3"):
        compose("cluster.num_workers=3", "train.batch_size=32")


def test_run_name_is_stable_per_config_and_data():
    config = compose("experiment=smoke")
    meta = {"splits": {"train": [{"file": "a", "num_examples": 10}]}}
    name = default_run_name(request_for(config), meta)
    assert name == default_run_name(
        request_for(compose("experiment=smoke", "cluster.num_workers=2", "train.max_failures=3")),
        meta,
    )
    assert name != default_run_name(
        request_for(compose("experiment=smoke", "train.epochs=3")), meta
    )
    assert name != default_run_name(request_for(config), {**meta, "extra": 1})
    assert name.startswith("mlp-digits-")
    assert default_run_name(request_for(compose("train.run_name=mine")), meta) == "mine"


@pytest.mark.slow
def test_mixed_precision_and_xla_train_with_float32_outputs(digits_pipeline, tmp_path):
    """The gpu preset's flags, exercised on CPU in a fresh process (MWMS must be its first TF call)."""
    from pipeline.training.worker import TrainJob, job_to_dict

    config = compose("experiment=smoke", "train.epochs=2", "cluster=gpu")
    job = TrainJob(
        processed_dir=digits_pipeline[0].paths.processed,
        tensorboard_dir=str(tmp_path / "tb"),
        seed=0,
        model=config.model,
        train=config.train,
        augment=config.augment,
        mixed_precision=config.cluster.mixed_precision,
        xla=config.cluster.xla,
    )
    script = (
        "import json, sys; import pipeline; from pipeline.training.worker import fit_model, job_from_dict; "
        "model, history = fit_model(job_from_dict(json.loads(sys.argv[1])), 0, 1); "
        "print(json.dumps({'output': model.outputs[0].dtype.name, 'compute': model.layers[1].compute_dtype, "
        "'epochs': history['epochs'], 'accuracy': history['accuracy'][-1]}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(job_to_dict(job))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (
        result["output"] == "float32"
        and result["compute"] == "float16"
        and result["epochs"] == [1, 2]
    )
    assert result["accuracy"] > 0.3


# --- a two-node Ray cluster on this machine -----------------------------------------------------


def cluster_overrides(address: str, root: Path, processed: str, *extra: str) -> list[str]:
    return [
        "experiment=smoke",
        *tmp_paths(root),
        f"paths.processed={processed}",
        "cluster=address",
        f"cluster.address={address}",
        "cluster.num_workers=2",
        "cluster.placement_strategy=STRICT_SPREAD",
        f"train.epochs={EPOCHS}",
        "train.batch_size=32",
        *extra,
    ]


def evaluate_accuracy(root: Path, processed: str) -> float:
    from pipeline.evaluation.evaluate import run_evaluate

    config = compose("experiment=smoke")
    run_evaluate(config.evaluate, Path(processed), root / "models", root / "reports")
    return json.loads((root / "reports" / "metrics.json").read_text())["accuracy"]


@pytest.fixture(scope="module")
def uninterrupted(two_node_cluster, digits_pipeline, tmp_path_factory):
    """The 2-worker run on the two-node cluster, undisturbed: ``(output, accuracy)``."""
    processed = digits_pipeline[0].paths.processed
    root = tmp_path_factory.mktemp("uninterrupted")
    done = run_stage("train", *cluster_overrides(two_node_cluster, root, processed), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr, evaluate_accuracy(root, processed)


@pytest.mark.slow
def test_one_worker_on_each_node(uninterrupted):
    output, accuracy = uninterrupted
    workers = {int(rank): node for rank, _, node, _ in WORKER_LINE.findall(output)}
    assert set(workers) == {0, 1}, output[-3000:]
    assert workers[0] != workers[1], "STRICT_SPREAD placed both workers on one node"
    assert accuracy > 0.85


@pytest.mark.slow
def test_too_many_workers_for_the_cluster_fail_before_training(
    two_node_cluster, digits_pipeline, tmp_path
):
    processed = digits_pipeline[0].paths.processed
    config = compose(
        *cluster_overrides(
            two_node_cluster, tmp_path, processed, "cluster.num_workers=4", "train.batch_size=64"
        )
    )
    with pytest.raises(
        UserError,
        match="STRICT_SPREAD puts each of 4 workers on its own node but the Ray cluster has 2 node",
    ):
        run_train(
            request_for(config),
            Path(processed),
            tmp_path / "models",
            tmp_path / "tb",
            str(tmp_path / "ray"),
        )
    assert not (tmp_path / "models").exists() and not (tmp_path / "ray").exists()


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_training_resumes(
    two_node_cluster, digits_pipeline, uninterrupted, tmp_path, monkeypatch
):
    monkeypatch.setenv(
        "RAY_DEDUP_LOGS", "0"
    )  # see test_rerun_after_the_driver_was_killed_continues
    processed = digits_pipeline[0].paths.processed
    stage = start_stage(
        *cluster_overrides(two_node_cluster, tmp_path, processed, "train.max_failures=1")
    )
    lines, pids, killed = [], {}, None
    for line in watched_lines(stage, 600):
        lines.append(line)
        if match := WORKER_LINE.search(line):
            pids[int(match.group(1))] = int(match.group(4))
        if (
            killed is None
            and (match := EPOCH_LINE.search(line))
            and int(match.group(1)) >= 2
            and pids
        ):
            killed = pids.get(1, pids[0])
            os.kill(killed, signal.SIGKILL)
    output = "".join(lines)
    assert stage.wait(timeout=600) == 0 and killed is not None, output[-3000:]
    assert len({pid for *_, pid in WORKER_LINE.findall(output)}) >= 3, (
        "a new worker group started after the kill"
    )
    assert "Resuming from the checkpoint of epoch" in output
    history = json.loads((tmp_path / "models" / "history.json").read_text())
    assert history["epochs"] == list(range(1, EPOCHS + 1))
    assert abs(evaluate_accuracy(tmp_path, processed) - uninterrupted[1]) <= 0.02


@pytest.mark.slow
def test_rerun_after_the_driver_was_killed_continues(
    two_node_cluster, digits_pipeline, tmp_path, monkeypatch
):
    from pipeline.io import read_json

    # Both loopback nodes share one session directory, so both log monitors forward every worker
    # line under different node IPs and Ray's dedup then drops some epoch lines: keep them all.
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    processed = digits_pipeline[0].paths.processed
    overrides = cluster_overrides(two_node_cluster, tmp_path, processed)
    stage = start_stage(*overrides)
    first_epochs = []
    for line in watched_lines(stage, 600):
        if match := EPOCH_LINE.search(line):
            first_epochs.append(int(match.group(1)))
            if first_epochs[-1] >= 4:
                os.killpg(stage.pid, signal.SIGKILL)
                break
    stage.wait(timeout=30)
    assert first_epochs and not (tmp_path / "models").exists()
    config = compose(*overrides)
    meta = read_json(Path(processed) / "meta.json")
    name, epoch, tensorboard = plan_run(
        request_for(config), meta, str(tmp_path / "ray"), tmp_path / "tensorboard"
    )
    assert epoch >= 1 and tensorboard.parent == tmp_path / "tensorboard" and tensorboard.is_dir()
    fresh = compose(*overrides, "train.resume=false")
    assert plan_run(request_for(fresh), meta, str(tmp_path / "ray"), tmp_path / "tensorboard")[
        1:
    ] != (epoch, tensorboard)
    assert (
        plan_run(request_for(fresh), meta, str(tmp_path / "ray"), tmp_path / "tensorboard")[1] == 0
    )
    second = run_stage("train", *overrides, timeout=600)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    assert f"Resuming run {name} from its checkpoint of epoch" in output
    # a set: both loopback nodes share one session directory, so both log monitors forward each line
    second_epochs = sorted({int(number) for number, _ in EPOCH_LINE.findall(output)})
    run = json.loads((tmp_path / "models" / "run.json").read_text())
    # >=: the killed driver's workers may still report a checkpoint before Ray notices the driver is gone
    assert run["resumed_from_epoch"] >= epoch and run["tensorboard_dir"] == str(tensorboard)
    assert second_epochs == list(range(run["resumed_from_epoch"] + 1, EPOCHS + 1)), output[-3000:]
    history = json.loads((tmp_path / "models" / "history.json").read_text())
    assert history["epochs"] == list(range(1, EPOCHS + 1))
    # the finished run's Ray directory is set aside: the next run of this config starts afresh
    assert not any(
        path.name.startswith("mlp-digits-") and "." not in path.name
        for path in (tmp_path / "ray").iterdir()
    )


@pytest.mark.slow
def test_user_model_code_reaches_the_workers_on_both_nodes(
    two_node_cluster, digits_pipeline, tmp_path
):
    """A builder package only the driver can import (on its PYTHONPATH, not the cluster's) reaches
    both nodes' workers through the job's runtime_env py_modules, and the trained model reloads."""
    package = tmp_path / "code" / "cluster_user_models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text((REPO / "user_models" / "examples.py").read_text())
    processed = digits_pipeline[0].paths.processed
    builder = "model.builder=cluster_user_models.nets:subclassed_mlp"
    overrides = cluster_overrides(two_node_cluster, tmp_path, processed, "model=custom", builder)
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{tmp_path / 'code'}", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "stages.train", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    workers = {
        int(rank): node for rank, _, node, _ in WORKER_LINE.findall(done.stdout + done.stderr)
    }
    assert set(workers) == {0, 1} and workers[0] != workers[1]
    run = json.loads((tmp_path / "models" / "run.json").read_text())
    assert run["model_module"] == "cluster_user_models.nets"
