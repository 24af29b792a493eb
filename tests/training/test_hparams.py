"""TensorBoard HParams: a run's hyperparameters and final metrics, written and read back with TensorBoard's reader."""

from __future__ import annotations

import pytest

from helpers.config import compose
from pipeline.settings import TrainRequest
from pipeline.training.hparams import hparams_from_settings, log_hparams, read_hparams


def test_hparams_are_flat_scalars_with_lists_as_text():
    values = hparams_from_settings(
        TrainRequest.from_config(compose("model=cnn", "train.learning_rate=0.003"))
    )
    assert values["model.filters"] == "32,64" and values["train.learning_rate"] == 0.003
    assert all(isinstance(value, (bool, int, float, str)) for value in values.values())


def test_logged_hparams_and_final_metrics_read_back(tmp_path):
    config = compose("model=mlp", "train.batch_size=16", "model.dropout_rate=0.25")
    run_dir = tmp_path / "trial-7"
    log_hparams(
        run_dir,
        TrainRequest.from_config(config),
        {"epochs": 3, "loss": 0.5, "val_loss": 0.625, "val_accuracy": 0.875},
    )
    hparams, finals = read_hparams(run_dir)
    assert hparams["model.name"] == "mlp" and hparams["train.batch_size"] == 16
    assert (
        hparams["model.dropout_rate"] == pytest.approx(0.25)
        and hparams["model.hidden_units"] == "64,64"
    )
    assert finals == {"final/loss": 0.5, "final/val_loss": 0.625, "final/val_accuracy": 0.875}
