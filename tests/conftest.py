"""Shared fixtures: settings composed from the real conf/ (so tests see the shipped defaults),
redirected to temporary paths, and tiny datasets written by the tests themselves."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from pipeline.settings import PipelineConfig

REPO = Path(__file__).resolve().parents[1]


def compose(*overrides: str) -> PipelineConfig:
    """``conf/`` composed with ``overrides`` and validated, as a stage would see it."""
    from stages._common import compose_conf, to_settings

    return to_settings(compose_conf(list(overrides)))


def tmp_paths(tmp_path: Path) -> list[str]:
    """Overrides that send every stage output (and Ray/TensorBoard logs) under ``tmp_path``."""
    return [f"paths.raw={tmp_path}/raw", f"paths.processed={tmp_path}/processed", f"paths.models={tmp_path}/models",
            f"paths.reports={tmp_path}/reports", f"paths.exports={tmp_path}/exports",
            f"train.tensorboard_dir={tmp_path}/tensorboard", f"cluster.storage_dir={tmp_path}/ray"]


@functools.lru_cache
def _composed_data(name: str):
    return compose(f"data={name}").data


def data_settings(name: str, **overrides):
    """``conf/data/<name>.yaml`` as composed (once per name: Hydra is slow), with ``data.<key>`` overrides."""
    return dataclasses.replace(_composed_data(name), **{key: str(value) if isinstance(value, Path) else value
                                                        for key, value in overrides.items()})


def write_npz(path: Path, x: np.ndarray, y: np.ndarray, **extra) -> Path:
    np.savez(path, x=x, y=y, **extra)
    return path


def run_stage(name: str, *args: str, cwd: Path = REPO, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m stages.<name> args`` the way a user (or dvc.yaml) does."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", f"stages.{name}", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def tiny_images():
    """60 random 8x8x1 uint8 'images' in 3 classes whose mean brightness encodes the label."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = (rng.integers(0, 60, size=(60, 8, 8, 1)) + 60 * y[:, None, None, None]).astype(np.uint8)
    return x, y


@pytest.fixture(scope="session")
def digits_pipeline(tmp_path_factory):
    """Ingest + preprocess of the real digits data once per session: ``(config, root)``."""
    from pipeline.ingest import run_ingest
    from pipeline.preprocess import run_preprocess

    root = tmp_path_factory.mktemp("digits")
    config = compose("experiment=smoke", *tmp_paths(root))
    run_ingest(config.data, Path(config.paths.raw))
    run_preprocess(config.preprocess, config.seed, Path(config.paths.raw), Path(config.paths.processed))
    return config, root


def fit_and_save(config, epochs: int):
    """A model of ``config.model`` fitted in-process (no Ray) on the train split and saved as the
    train stage does (``paths.models``), built from ``meta.json`` as the workers do; returns it."""
    from pipeline.env import import_tensorflow
    from pipeline.models import build_model, compile_model
    from pipeline.preprocess import load_split
    from pipeline.worker import save_model

    tf = import_tensorflow()
    tf.keras.utils.set_random_seed(0)
    x, y = load_split(Path(config.paths.processed), "train")
    meta = json.loads((Path(config.paths.processed) / "meta.json").read_text())
    num_classes = len(meta["class_names"])
    model = build_model(config.model, x.shape[1:], num_classes, meta.get("embeddings"), target=meta.get("target"))
    model = compile_model(model, config.model, config.train, num_classes)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    save_model(model, {"loss": [0.0]}, Path(config.paths.models))
    return model


def saved_model_cli_show(directory: Path) -> str:
    """``saved_model_cli show --all`` of a SavedModel, asserted to succeed."""
    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run([str(cli), "show", "--all", "--dir", str(directory)], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    return shown.stdout


@pytest.fixture(scope="session")
def trained_mlp(digits_pipeline):
    """A small MLP fitted in-process (no Ray) on the digits splits and saved as the train stage does."""
    config, root = digits_pipeline
    return config, root, fit_and_save(config, epochs=15)


@pytest.fixture
def git_copy(tmp_path):
    """The repository's tracked files copied into a fresh git repo (for dvc tests)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    target = tmp_path / "repo"
    for name in files:
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    node_modules = REPO / "tools" / "tfjs_runner" / "node_modules"
    if node_modules.is_dir():
        (target / "tools" / "tfjs_runner" / "node_modules").symlink_to(node_modules)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    subprocess.run([*git, "add", "-A"], cwd=target, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=target, check=True)
    return target


def write_raw(directory: Path, x: np.ndarray, y: np.ndarray, split: np.ndarray | None = None) -> Path:
    """What ingest writes (``x.npy``, ``y.npy``, ``manifest.json``, optional ``split.npy``), without a source."""
    from pipeline.io import write_json

    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "x.npy", x)
    np.save(directory / "y.npy", y.astype(np.int64))
    if split is not None:
        np.save(directory / "split.npy", split)
    num_classes = int(y.max()) + 1
    write_json(directory / "manifest.json", {"source": "test", "num_examples": len(y), "class_names": [f"c{i}" for i in range(num_classes)],
                                             "feature_shape": list(x.shape[1:]), "feature_dtype": str(x.dtype)})
    return directory


def id_table(num_examples: int, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A table whose first column is the example's id (survives ``normalize=none``), labels cycling."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.arange(num_examples), rng.random(num_examples)])
    return x, np.arange(num_examples) % num_classes


def class_sorted_source(directory: Path, per_class: int, num_classes: int = 10, features: int = 8, spread: float = 1.6,
                        seed: int = 0) -> Path:
    """Ingest's output for ``num_classes`` overlapping Gaussian blobs, written class after class (as an
    image folder's files are listed), so any order the pipeline keeps from the source shows up."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, (num_classes, features))
    y = np.repeat(np.arange(num_classes), per_class)
    x = (centres[y] + rng.normal(0.0, 1.0, (len(y), features))).astype(np.float32)
    return write_raw(directory, x, y)


@pytest.fixture(scope="session")
def exported_mlp(trained_mlp):
    """``trained_mlp`` exported once per session (SavedModel, float32 + int8 TFLite, TF.js when Node
    is usable): ``(config, exports_dir, report)``."""
    import dataclasses

    from pipeline.export import run_export
    from pipeline.tfjs_node import tfjs_runner_status

    config, root, _ = trained_mlp
    settings = dataclasses.replace(config.export, tflite=["float32", "int8"], tfjs=tfjs_runner_status() is None, latency_repeats=3)
    out = root / "exports"
    report = run_export(settings, Path(config.paths.processed), Path(config.paths.models), out, None)
    return config, out, report


def free_port() -> int:
    """A TCP port nothing listens on once this returns."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_line(path: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start failed; see {path}:\n{path.read_text()[-2000:] if path.exists() else ''}")
        time.sleep(0.2)


def watched_lines(process: subprocess.Popen, timeout: float):
    """``process.stdout`` line by line; once ``timeout`` seconds have passed the process (with its session, when it
    leads one) is killed, so its output ends and a hung run fails its test instead of hanging the suite."""
    def kill() -> None:
        try:
            leads_session = os.getsid(process.pid) == process.pid
        except ProcessLookupError:
            return
        _kill_session(process) if leads_session else process.kill()

    watchdog = threading.Timer(timeout, kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield from process.stdout
    finally:
        watchdog.cancel()


def _kill_session(process: subprocess.Popen) -> None:
    """SIGKILL the process group we started and anything left in its session (Ray's agents)."""
    sid = process.pid
    try:
        os.killpg(sid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    process.wait(timeout=30)


@pytest.fixture(scope="session")
def two_node_cluster():
    """``ray start --head`` (resource node_a) plus a second node (node_b, own IP 127.0.0.2), 2 CPUs each,
    each in its own session; yields the head's GCS address. One per pytest session (starting it takes
    30-70 s): test_cluster.py and test_sweep.py share it, so a test must leave it as it found it. Torn
    down by killing both sessions (never `ray stop`, which would stop every Ray on the machine)."""
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths have a length limit
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = str(Path(sys.executable).parent / "ray")
    common = ["--block", "--num-cpus=2", "--num-gpus=0", "--object-store-memory=100000000", "--disable-usage-stats"]
    processes = []
    try:
        head_log = temp / "head.log"
        processes.append(subprocess.Popen(
            [ray_cli, "start", "--head", f"--port={port}", "--resources={\"node_a\": 2}", f"--temp-dir={temp}/ray",
             "--include-dashboard=false", *common], env=env, start_new_session=True, stdout=head_log.open("w"), stderr=subprocess.STDOUT))
        _wait_for_line(head_log, "Ray runtime started", processes[0], timeout=120)
        node_log = temp / "node.log"
        # A second IP: nodes sharing one IP share Ray's cached per-IP ports, and the second raylet fails to bind.
        processes.append(subprocess.Popen(
            [ray_cli, "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.2", "--resources={\"node_b\": 2}", *common],
            env=env, start_new_session=True, stdout=node_log.open("w"), stderr=subprocess.STDOUT))
        _wait_for_line(node_log, "Ray runtime started", processes[1], timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        for process in reversed(processes):
            _kill_session(process)
        shutil.rmtree(temp, ignore_errors=True)
