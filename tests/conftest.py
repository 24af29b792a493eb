"""Shared fixtures: settings composed from the real conf/ (so tests see the shipped defaults),
redirected to temporary paths, and tiny datasets written by the tests themselves."""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="session")
def trained_mlp(digits_pipeline):
    """A small MLP fitted in-process (no Ray) on the digits splits and saved as the train stage does."""
    from pipeline.preprocess import load_split
    from pipeline.worker import save_model
    from pipeline.models import build_model, compile_model
    from pipeline.env import import_tensorflow

    config, root = digits_pipeline
    tf = import_tensorflow()
    tf.keras.utils.set_random_seed(0)
    x, y = load_split(Path(config.paths.processed), "train")
    model = compile_model(build_model(config.model, x.shape[1:], 10), config.model, config.train, 10)
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    save_model(model, {"loss": [0.0]}, Path(config.paths.models))
    return config, root, model


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
