"""Real Ray Train runs of the shipped MLP defaults (local Ray started by the library): the seeds'
floor, an identical rerun with the same seed, TensorBoard's tags, and 2 workers against 1.

One 1-worker run of the defaults serves all three checks (a run costs ~30 s of Ray and worker
start-up on 2 cores). Only ``paths.*`` are redirected; every training value is what ``conf/`` ships.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.config import compose, tmp_paths
from helpers.data import ingest_and_preprocess
from pipeline.evaluation.evaluate import run_evaluate
from pipeline.settings import TrainRequest
from pipeline.training.train import run_train

pytestmark = pytest.mark.slow


MLP = ("model=mlp",)


def prepare(root: Path, *overrides: str):
    config = compose(*tmp_paths(root), *overrides)
    ingest_and_preprocess(config)
    return config


def train_and_evaluate(config, models: Path, reports: Path) -> dict:
    request = TrainRequest.from_config(config)
    run_train(
        request,
        Path(config.paths.processed),
        models,
        Path(config.train.tensorboard_dir),
        Path(config.cluster.storage_dir),
    )
    run_evaluate(config.evaluate, Path(config.paths.processed), models, reports)
    return json.loads((reports / "metrics.json").read_text())


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    """The MLP defaults trained once on 1 worker: (config, root, metrics)."""
    root = tmp_path_factory.mktemp("mlp-defaults")
    config = prepare(root, *MLP)
    return config, root, train_and_evaluate(config, root / "models-1", root / "reports-1")


def test_mlp_defaults_reach_the_seed_floor_and_log_to_tensorboard(one_worker):
    _, root, metrics = one_worker
    assert metrics["accuracy"] >= 0.95, metrics  # issue 2's floor for the MLP
    history = json.loads((root / "models-1" / "history.json").read_text())
    epochs = len(history["epochs"])
    assert (
        history["epochs"] == list(range(1, epochs + 1))
        and len(history["examples_per_second"]) == epochs
    )
    run = json.loads((root / "models-1" / "run.json").read_text())
    check_tensorboard_run(Path(run["tensorboard_dir"]), epochs=epochs)
    # The curves dvc.yaml declares as plots: train and validation per compiled metric, and the learning rate.
    curves = root / "models-1" / "curves"
    assert sorted(path.name for path in curves.iterdir()) == ["accuracy.csv", "loss.csv"]
    loss = (curves / "loss.csv").read_text().splitlines()
    assert loss[0] == "epoch,train,validation" and len(loss) == epochs + 1
    assert [float(value) for value in loss[-1].split(",")[1:]] == pytest.approx(
        [history["loss"][-1], history["val_loss"][-1]]
    )
    rates = (root / "models-1" / "learning_rate.csv").read_text().splitlines()
    assert rates[0] == "epoch,learning_rate" and len(rates) == epochs + 1


def test_same_seed_gives_identical_metrics_on_one_worker(one_worker):
    config, root, _ = one_worker
    train_and_evaluate(config, root / "models-2", root / "reports-2")
    assert (root / "reports-1" / "metrics.json").read_text() == (
        root / "reports-2" / "metrics.json"
    ).read_text()


def check_tensorboard_run(run_dir: Path, epochs: int) -> None:
    """Read the run's event files with TensorBoard's own reader: one writer (rank 0) and the tags we promise."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def load(directory: Path) -> EventAccumulator:
        written = [
            path
            for path in directory.glob("events.out.tfevents.*")
            if not path.name.endswith(".hparams.v2")
        ]
        assert len(written) == 1, f"one writer (rank 0) in {directory}"
        accumulator = EventAccumulator(str(directory), size_guidance={"tensors": 0})
        return accumulator.Reload()

    train, validation, root = load(run_dir / "train"), load(run_dir / "validation"), load(run_dir)
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_examples_per_second"):
        assert [event.step for event in train.Tensors(tag)] == list(range(epochs)), tag
    assert [event.step for event in validation.Tensors("epoch_loss")] == list(range(epochs))
    assert root.Graph() is not None and "config" in root.Tags()["tensors"]
    config_text = root.Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert '"num_workers": 1' in config_text and '"learning_rate"' in config_text
    # run_train logs the run's HParams session and final metrics next to Keras's event files
    from pipeline.training.hparams import read_hparams

    hparams, finals = read_hparams(run_dir)
    assert hparams["model.name"] and "final/val_loss" in finals


@pytest.mark.ray
def test_two_workers_match_one_worker_with_the_same_global_batch(one_worker):
    """Same global batch (32 = 1 x 32 = 2 x 16), same config: test accuracy within 2 points."""
    _, root, one = one_worker
    two_workers = compose(*tmp_paths(root), *MLP, "cluster.num_workers=2")
    two = train_and_evaluate(two_workers, root / "models-w2", root / "reports-w2")
    assert json.loads((root / "models-w2" / "run.json").read_text())["num_workers"] == 2
    assert abs(one["accuracy"] - two["accuracy"]) <= 0.02, (one, two)


def test_training_curves_pair_every_metric_with_its_validation_twin(tmp_path):
    """What ``dvc plots`` draws: one ``epoch,train,validation`` file per metric of any task, and the learning rate."""
    from pipeline.training.train import write_training_curves

    history = {
        "epochs": [1, 2],
        "loss": [0.9, 0.5],
        "val_loss": [1.0, 0.7],
        "mae": [3.0, 2.0],
        "val_mae": [3.5, 2.5],
        "learning_rate": [0.001, 0.0005],
        "examples_per_second": [100.0, 120.0],
    }
    assert write_training_curves(history, tmp_path) == ["loss", "mae"]
    assert (tmp_path / "curves" / "mae.csv").read_text().splitlines() == [
        "epoch,train,validation",
        "1,3.0,3.5",
        "2,2.0,2.5",
    ]
    assert (tmp_path / "learning_rate.csv").read_text().splitlines() == [
        "epoch,learning_rate",
        "1,0.001",
        "2,0.0005",
    ]
