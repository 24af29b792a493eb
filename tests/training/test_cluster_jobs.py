"""`ray job submit` against a loopback Ray head with its job server: the train stage runs as a Ray
job in the repository (shared-filesystem mode) and its outputs land where dvc.yaml declares them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from helpers.config import REPO
from helpers.processes import _kill_session, free_port, start_ray_node
from pipeline.training.train import SET_ASIDE_SUFFIX

# Every port `ray start --head` would otherwise take from a fixed default (10001, 52365, ...), so this
# head can run next to the two-node cluster fixture or another Ray on the machine.
HEAD_PORTS = (
    "port",
    "dashboard-port",
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
    "node-manager-port",
    "object-manager-port",
)


def _wait_for_job_server(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"Ray's job server did not come up at {url}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def job_server():
    """A one-node Ray head with the dashboard (job server) on 127.0.0.1, in its own session; yields the
    job server's URL. Torn down by killing the session (never `ray stop`)."""
    temp = Path(
        tempfile.mkdtemp(prefix="rj", dir="/tmp")
    )  # short: Ray's socket paths have a length limit
    ports = {name: free_port() for name in HEAD_PORTS}
    # The dashboard gives each of its modules 30 s to start; a busy 2-core box needs more.
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT": "180",
    }
    env.pop("RAY_ADDRESS", None)
    try:
        head = start_ray_node(
            temp / "head.log",
            "--head",
            *(f"--{name}={port}" for name, port in ports.items()),
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--temp-dir={temp}/ray",
            "--num-cpus=2",
            env=env,
        )
    except RuntimeError:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    try:
        url = f"http://127.0.0.1:{ports['dashboard-port']}"
        _wait_for_job_server(url, head, timeout=60)
        yield url
    finally:
        _kill_session(head)
        shutil.rmtree(temp, ignore_errors=True)


def submit(url: str, checkout: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``ray job submit`` of the train stage, run by the job in ``checkout`` (a path the head node sees)."""
    # As the README shows it: Ray joins the entrypoint's words with spaces (quoting those with spaces)
    # and runs them in a shell, so `sh -c "cd ... && ..."` keeps the `&&` on the cluster's side.
    entrypoint = [
        "sh",
        "-c",
        f"cd {checkout} && {sys.executable} -m stages.train {' '.join(overrides)}",
    ]
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "ray"),
            "job",
            "submit",
            "--address",
            url,
            "--",
            *entrypoint,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_ray_job_submit_writes_the_outputs_dvc_declares(job_server, git_copy, digits_pipeline):
    processed = Path(digits_pipeline[0].paths.processed)
    shutil.copytree(
        processed, git_copy / "data" / "processed"
    )  # what `dvc repro preprocess` leaves in the checkout
    done = submit(job_server, git_copy, "experiment=smoke", "train.epochs=1")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "epoch 1/1" in output and "succeeded" in output, output[-3000:]
    # dvc.yaml's train outs (${paths.models}) and the logs, relative to the checkout the job ran in
    assert {path.name for path in (git_copy / "models").iterdir()} == {
        "model.keras",
        "history.json",
        "run.json",
        "curves",  # the training curves dvc.yaml declares as plots
        "learning_rate.csv",
    }
    assert any((git_copy / "logs" / "tensorboard").iterdir())
    # cluster.storage_dir keeps the finished run set aside, its last checkpoint holding the final model (README)
    (finished,) = [
        path for path in (git_copy / "logs" / "ray").iterdir() if SET_ASIDE_SUFFIX.search(path.name)
    ]
    assert any(finished.glob("checkpoint_*/model.keras"))


@pytest.mark.slow
def test_a_failed_job_fails_the_submit_command(job_server, tmp_path):
    """A user error inside the job (one `error:` line, exit 2) makes `ray job submit` exit non-zero."""
    done = submit(job_server, REPO, "train.epochs=0")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "error: " in output and "train.epochs" in output, output[-3000:]
