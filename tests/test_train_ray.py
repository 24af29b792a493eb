"""Real Ray Train runs (local Ray started by the library): determinism at 1 worker, and 2 workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import compose, tmp_paths
from pipeline.evaluate import run_evaluate
from pipeline.ingest import run_ingest
from pipeline.preprocess import run_preprocess
from pipeline.train import TrainRequest, run_train

pytestmark = pytest.mark.slow


def prepare(root: Path, *overrides: str):
    config = compose("experiment=smoke", *tmp_paths(root), *overrides)
    run_ingest(config.data, Path(config.paths.raw))
    run_preprocess(config.preprocess, config.seed, Path(config.paths.raw), Path(config.paths.processed))
    return config


def train_and_evaluate(config, models: Path, reports: Path) -> dict:
    request = TrainRequest(seed=config.seed, model=config.model, train=config.train, augment=config.augment,
                           cluster=config.cluster, data_name=config.data.name)
    run_train(request, Path(config.paths.processed), models, Path(config.train.tensorboard_dir), Path(config.cluster.storage_dir))
    run_evaluate(config.evaluate, Path(config.paths.processed), models, reports)
    return json.loads((reports / "metrics.json").read_text())


def test_same_seed_gives_identical_metrics_on_one_worker(tmp_path):
    config = prepare(tmp_path, "train.epochs=3", "augment=light")
    first = train_and_evaluate(config, tmp_path / "models-1", tmp_path / "reports-1")
    second = train_and_evaluate(config, tmp_path / "models-2", tmp_path / "reports-2")
    assert (tmp_path / "reports-1" / "metrics.json").read_text() == (tmp_path / "reports-2" / "metrics.json").read_text()
    assert first["accuracy"] > 0.5
    history = json.loads((tmp_path / "models-1" / "history.json").read_text())
    assert history["epochs"] == [1, 2, 3] and len(history["examples_per_second"]) == 3
    run = json.loads((tmp_path / "models-1" / "run.json").read_text())
    events = list(Path(run["tensorboard_dir"]).rglob("events.out.tfevents.*"))
    assert events, "rank 0 writes TensorBoard events"


def test_two_workers_train_one_model(tmp_path):
    config = prepare(tmp_path, "cluster.num_workers=2", "train.epochs=8", "train.batch_size=32")
    metrics = train_and_evaluate(config, tmp_path / "models", tmp_path / "reports")
    assert metrics["accuracy"] > 0.85
    run = json.loads((tmp_path / "models" / "run.json").read_text())
    assert run["num_workers"] == 2
