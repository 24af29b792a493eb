"""Shared fixtures: settings composed from the real conf/ (so tests see the shipped defaults),
redirected to temporary paths, and tiny datasets written by the tests themselves. Plain helpers live in
tests/helpers/."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from helpers.config import REPO, compose, tmp_paths
from helpers.data import ingest_and_preprocess
from helpers.models import fit_and_save
from helpers.processes import _kill_session, free_port, start_ray_node

# Tests that start Ray through these fixtures run one after another under pytest-xdist, like those
# marked `ray` (see pytest_collection_modifyitems).
RAY_FIXTURES = {"two_node_cluster", "job_server"}
# The longest groups (minutes each: docs/benchmarks.md#test-suite) start first, so that neither
# worker is left running one of them alone at the end (xdist keeps this order: pyproject.toml's
# --no-loadscope-reorder; by default it sends the groups with the most tests first).
LONGEST_GROUPS = ("ray", "tests/stages/test_backbone_stages.py", "tests/stages/test_dvc_e2e.py")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist's ``--dist loadgroup`` (pyproject.toml's addopts): every test that
    starts Ray in one group, so one Ray at a time runs beside the other worker's tests (two Rays
    on one loopback IP share its cached ports, and the two-node cluster is built once); every
    other test with the rest of its module, so module-scoped fixtures (a trained model, prepared
    data) are built once; the :data:`LONGEST_GROUPS` first. Runs before xdist's own hook, which
    reads the groups."""
    groups = {}
    for item in items:
        starts_ray = item.get_closest_marker("ray") or RAY_FIXTURES & set(item.fixturenames)
        groups[item] = "ray" if starts_ray else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(groups[item]))
    rank = {group: index for index, group in enumerate(LONGEST_GROUPS)}
    # In the Ray group, the modules that use the two-node cluster first and its users first within
    # them, so that the cluster (idle Ray daemons: ~7 CPU s a minute) stops early
    # (pytest_runtest_teardown); each module's tests stay together (module-scoped fixtures).
    cluster_modules = {item.module for item in items if "two_node_cluster" in item.fixturenames}
    items.sort(
        key=lambda item: (
            rank.get(groups[item], len(rank)),
            groups[item] == "ray" and item.module not in cluster_modules,
            groups[item] == "ray" and "two_node_cluster" not in item.fixturenames,
        )
    )  # stable: the rest keep their order


def pytest_runtest_teardown(item, nextitem):
    """Stop the two-node cluster after the last test of this process's run that uses it."""
    if "two_node_cluster" not in item.fixturenames or _TWO_NODE_CLUSTER.address is None:
        return
    later = item.session.items[item.session.items.index(item) + 1 :]
    if not any("two_node_cluster" in other.fixturenames for other in later):
        _TWO_NODE_CLUSTER.stop()


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
    root = tmp_path_factory.mktemp("digits")
    config = compose("experiment=smoke", *tmp_paths(root))
    ingest_and_preprocess(config)
    return config, root


@pytest.fixture(scope="session")
def trained_mlp(digits_pipeline):
    """A small MLP fitted in-process (no Ray) on the digits splits and saved as the train stage does."""
    config, root = digits_pipeline
    return config, root, fit_and_save(config, epochs=15)


@pytest.fixture
def git_copy(tmp_path):
    """The repository's tracked files copied into a fresh git repo (for dvc tests)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
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


@pytest.fixture(scope="session")
def exported_mlp(trained_mlp):
    """``trained_mlp`` exported once per session (SavedModel, float32 + int8 TFLite, TF.js when Node
    is usable): ``(config, exports_dir, report)``."""
    import dataclasses

    from pipeline.export.run import run_export
    from pipeline.export.tfjs_node import tfjs_runner_status

    config, root, _ = trained_mlp
    settings = dataclasses.replace(
        config.export,
        tflite=["float32", "int8"],
        tfjs=tfjs_runner_status() is None,
        latency_repeats=3,
    )
    out = root / "exports"
    report = run_export(
        settings, Path(config.paths.processed), Path(config.paths.models), out, None
    )
    return config, out, report


class _TwoNodeCluster:
    """``ray start --head`` (resource node_a) plus a second node (node_b, own IP 127.0.0.2), 2 CPUs
    each, each in its own session. Started by the first test that asks for it (30-70 s), shared by
    test_cluster.py and test_sweep.py (a test must leave it as it found it), stopped after the last
    one (:func:`pytest_runtest_teardown`) or at the session's end, by killing both sessions (never
    `ray stop`, which would stop every Ray on the machine)."""

    def __init__(self) -> None:
        self.address: str | None = None
        self.processes: list[subprocess.Popen] = []
        self.temp: Path | None = None

    def start(self) -> str:
        if self.address is not None:
            return self.address
        # short: Ray's socket paths have a length limit
        self.temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
        port = free_port()
        try:
            self.processes.append(
                start_ray_node(
                    self.temp / "head.log",
                    "--head",
                    f"--port={port}",
                    "--num-cpus=2",
                    '--resources={"node_a": 2}',
                    f"--temp-dir={self.temp}/ray",
                    "--include-dashboard=false",
                )
            )
            # A second IP: nodes sharing one IP share Ray's cached per-IP ports, and the second
            # raylet fails to bind.
            self.processes.append(
                start_ray_node(
                    self.temp / "node.log",
                    f"--address=127.0.0.1:{port}",
                    "--node-ip-address=127.0.0.2",
                    "--num-cpus=2",
                    '--resources={"node_b": 2}',
                )
            )
        except BaseException:
            self.stop()
            raise
        self.address = f"127.0.0.1:{port}"
        return self.address

    def stop(self) -> None:
        for process in reversed(self.processes):
            _kill_session(process)
        self.processes = []
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
        self.address, self.temp = None, None


_TWO_NODE_CLUSTER = _TwoNodeCluster()


@pytest.fixture(scope="session")
def two_node_cluster():
    """The GCS address of the two-node cluster (:class:`_TwoNodeCluster`)."""
    try:
        yield _TWO_NODE_CLUSTER.start()
    finally:
        _TWO_NODE_CLUSTER.stop()
