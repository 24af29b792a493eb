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
    items.sort(
        key=lambda item: rank.get(groups[item], len(rank))
    )  # stable: the rest keep their order


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


@pytest.fixture(scope="session")
def two_node_cluster():
    """``ray start --head`` (resource node_a) plus a second node (node_b, own IP 127.0.0.2), 2 CPUs each,
    each in its own session; yields the head's GCS address. One per pytest session (starting it takes
    30-70 s): test_cluster.py and test_sweep.py share it, so a test must leave it as it found it. Torn
    down by killing both sessions (never `ray stop`, which would stop every Ray on the machine)."""
    temp = Path(
        tempfile.mkdtemp(prefix="rt", dir="/tmp")
    )  # short: Ray's socket paths have a length limit
    port = free_port()
    processes = []
    try:
        processes.append(
            start_ray_node(
                temp / "head.log",
                "--head",
                f"--port={port}",
                "--num-cpus=2",
                '--resources={"node_a": 2}',
                f"--temp-dir={temp}/ray",
                "--include-dashboard=false",
            )
        )
        # A second IP: nodes sharing one IP share Ray's cached per-IP ports, and the second raylet fails to bind.
        processes.append(
            start_ray_node(
                temp / "node.log",
                f"--address=127.0.0.1:{port}",
                "--node-ip-address=127.0.0.2",
                "--num-cpus=2",
                '--resources={"node_b": 2}',
            )
        )
        yield f"127.0.0.1:{port}"
    finally:
        for process in reversed(processes):
            _kill_session(process)
        shutil.rmtree(temp, ignore_errors=True)
