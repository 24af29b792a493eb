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
    check_tensorboard_run(Path(run["tensorboard_dir"]), epochs=3)


def check_tensorboard_run(run_dir: Path, epochs: int) -> None:
    """Read the run's event files with TensorBoard's own reader: one writer (rank 0) and the tags we promise."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def load(directory: Path) -> EventAccumulator:
        assert len(list(directory.glob("events.out.tfevents.*"))) == 1, f"one writer (rank 0) in {directory}"
        accumulator = EventAccumulator(str(directory), size_guidance={"tensors": 0})
        return accumulator.Reload()

    train, validation, root = load(run_dir / "train"), load(run_dir / "validation"), load(run_dir)
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_examples_per_second"):
        assert [event.step for event in train.Tensors(tag)] == list(range(epochs)), tag
    assert [event.step for event in validation.Tensors("epoch_loss")] == list(range(epochs))
    assert root.Graph() is not None and "config" in root.Tags()["tensors"]
    config_text = root.Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert '"num_workers": 1' in config_text and '"learning_rate"' in config_text


def test_two_workers_match_one_worker_with_the_same_global_batch(tmp_path):
    """Same global batch (32 = 1 x 32 = 2 x 16), same epochs: test accuracy within 2 points."""
    config = prepare(tmp_path, "train.epochs=15", "train.batch_size=32")
    one = train_and_evaluate(config, tmp_path / "models-1", tmp_path / "reports-1")
    two_workers = compose("experiment=smoke", *tmp_paths(tmp_path), "train.epochs=15", "train.batch_size=32", "cluster.num_workers=2")
    two = train_and_evaluate(two_workers, tmp_path / "models-2", tmp_path / "reports-2")
    assert json.loads((tmp_path / "models-2" / "run.json").read_text())["num_workers"] == 2
    assert one["accuracy"] > 0.9 and abs(one["accuracy"] - two["accuracy"]) <= 0.02, (one, two)
