"""What a resumed run keeps (EarlyStopping/ReduceLROnPlateau counters) and what storage keeps
(the newest few set-aside runs), without Ray."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.config import REPO, compose
from pipeline.training.train import SET_ASIDE_KEPT, _set_aside


def test_only_the_newest_set_aside_runs_are_kept(tmp_path):
    import pyarrow.fs

    names = [
        "run-a.20200101-000000",
        "run-a.20200102-000000",
        "run-b.20200103-000000",
        "run-c.20200104-000000",
        "run-b.20200105-000000",
        "run-a",
        "run-d",
    ]
    for name in names:
        (tmp_path / name).mkdir()
    (tmp_path / "notes.20200106-000000").write_text("a file, not a run")
    _set_aside(
        pyarrow.fs.LocalFileSystem(), str(tmp_path / "run-a")
    )  # run-a finished: set aside, then prune
    left = sorted(path.name for path in tmp_path.iterdir())
    aside = [name for name in left if name.startswith("run-a.") and name not in names]
    assert len(aside) == 1 and SET_ASIDE_KEPT == 3
    # the 3 newest set-aside runs (whatever their name), the runs in progress, the file
    assert left == sorted(
        [*aside, "run-b.20200105-000000", "run-c.20200104-000000", "run-d", "notes.20200106-000000"]
    )
    _set_aside(
        pyarrow.fs.LocalFileSystem(), str(tmp_path / "run-x")
    )  # nothing to set aside: prunes only
    assert sorted(path.name for path in tmp_path.iterdir()) == left


def _fit_on(callbacks, model, losses, start, finish=True):
    """Drive ``callbacks`` over ``losses[start:]`` as ``fit`` would (``finish=False``: killed after the
    last epoch, no ``on_train_end``); the weights are the epoch number."""
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    for epoch in range(start, len(losses)):
        model.set_weights([np.full_like(weight, epoch) for weight in model.get_weights()])
        for callback in callbacks:
            callback.on_epoch_end(epoch, {"val_loss": losses[epoch]})
        if model.stop_training:
            break
    for callback in callbacks if finish else ():
        callback.on_train_end()
    return epoch


def test_patience_counters_survive_a_checkpoint(tmp_path):
    """Interrupted after any epoch and resumed from its saved state, EarlyStopping stops at the same
    epoch with the same best weights and ReduceLROnPlateau reaches the same learning rate."""
    from pipeline.env import import_tensorflow
    from pipeline.training.callbacks import (
        STATE_FIELDS,
        configured_callbacks,
        restore_callback_state,
        save_callback_state,
    )

    tf = import_tensorflow()
    train = compose("train.early_stopping.patience=3", "train.reduce_lr.patience=2").train
    losses = [1.0, 0.5, 0.6, 0.7, 0.45, 0.8, 0.9, 0.95, 1.0, 1.1, 1.2]

    def fresh():
        model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
        model.compile(optimizer=tf.keras.optimizers.Adam(0.1), loss="mse")
        callbacks = [
            callback
            for callback in configured_callbacks(train, None)
            if type(callback).__name__ in STATE_FIELDS
        ]
        return model, callbacks

    def outcome(model, callbacks, stopped):
        return (
            stopped,
            float(model.optimizer.learning_rate.numpy()),
            model.get_weights()[0].flat[0],
            [
                {field: getattr(callback, field) for field in STATE_FIELDS[type(callback).__name__]}
                for callback in callbacks
            ],
        )

    model, callbacks = fresh()
    expected = outcome(model, callbacks, _fit_on(callbacks, model, losses, 0))
    assert expected[:3] == (
        7,
        pytest.approx(0.025),
        4,
    )  # stops at epoch 8 (patience 3 after 0.45), lr halved twice, best = epoch 5
    for interrupted_after in range(1, expected[0] + 1):
        model, callbacks = fresh()
        _fit_on(callbacks, model, losses[:interrupted_after], 0, finish=False)
        checkpoint = tmp_path / str(interrupted_after)
        checkpoint.mkdir()
        save_callback_state(callbacks, checkpoint)
        resumed = fresh()[
            1
        ]  # new callbacks, the model (weights, optimizer) as the checkpoint restores it
        restore_callback_state(resumed, checkpoint)
        assert (
            outcome(model, resumed, _fit_on(resumed, model, losses, interrupted_after)) == expected
        ), interrupted_after


@pytest.mark.slow
def test_a_resumed_fit_stops_where_an_uninterrupted_one_does(digits_pipeline, tmp_path):
    """The real worker function (MWMS, one process, no Ray): learning rate 0 keeps val_loss flat, so
    EarlyStopping (patience 2) stops after epoch 3; resumed from epoch 2's checkpoint it must too
    (with reset counters it would run to epoch 5)."""
    from pipeline.training.worker import TrainJob, job_to_dict

    config = compose(
        "experiment=smoke",
        "train.epochs=8",
        "train.early_stopping.enabled=true",
        "train.early_stopping.patience=2",
        "train.reduce_lr.enabled=true",
        "train.reduce_lr.patience=1",
    )
    job = TrainJob(
        processed_dir=digits_pipeline[0].paths.processed,
        tensorboard_dir=str(tmp_path / "tb"),
        seed=0,
        model=config.model,
        train=dataclasses.replace(config.train, learning_rate=0.0),
        augment=config.augment,
        mixed_precision=False,
        xla=False,
    )
    (tmp_path / "job.json").write_text(json.dumps(job_to_dict(job)))
    script = (
        "import json, sys; from pathlib import Path; import pipeline\n"
        "from pipeline.training.worker import fit_model, job_from_dict, save_model\n"
        "out, resume = Path(sys.argv[2]), (Path(sys.argv[3]) if len(sys.argv) > 3 else None)\n"
        "def report(model, logs, epoch, history, callbacks):\n"
        "    save_model(model, history, out / str(epoch + 1), callbacks)\n"
        "model, history = fit_model(job_from_dict(json.load(open(sys.argv[1]))), 0, 1, report=report, resume_dir=resume)\n"
        "print(json.dumps(history['epochs']))\n"
    )

    def fit(out: Path, *resume: Path) -> list[int]:
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "job.json"), str(out), *map(str, resume)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert fit(tmp_path / "whole") == [1, 2, 3]
    state = json.loads((tmp_path / "whole" / "3" / "callbacks.json").read_text())
    assert state["EarlyStopping"]["wait"] == 2 and state["ReduceLROnPlateau"]["wait"] == 2
    assert fit(tmp_path / "resumed", tmp_path / "whole" / "2") == [1, 2, 3]
    assert json.loads((tmp_path / "resumed" / "3" / "callbacks.json").read_text()) == state


def test_a_worker_that_writes_no_events_leaves_no_directory_behind(tmp_path, monkeypatch):
    """Ranks other than 0 get a TensorBoard callback too (every rank runs the same callbacks); its
    temporary directory is made by each fit and gone after it, fine-tuning's second fit included,
    and callbacks built without a fit make none."""
    import tempfile

    from pipeline.env import import_tensorflow
    from pipeline.training.callbacks import configured_callbacks

    tf = import_tensorflow()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    callbacks = configured_callbacks(compose().train, None)
    (board,) = [callback for callback in callbacks if "TensorBoard" in type(callback).__name__]
    assert not list(tmp_path.glob("tb-discard-*"))  # made by a fit, not by building the callbacks
    x, y = np.zeros((8, 2)), np.zeros(8)
    for epochs in (1, 2):  # a second fit, as fine-tuning's phase two
        model.fit(x, y, epochs=epochs, initial_epoch=epochs - 1, callbacks=callbacks, verbose=0)
        assert Path(board.log_dir).parent == tmp_path  # where this fit wrote
        assert not list(tmp_path.glob("tb-discard-*"))
