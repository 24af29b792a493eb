"""The training callbacks that change how ``fit`` runs rather than what it logs."""

from __future__ import annotations

import numpy as np

from pipeline.env import import_tensorflow
from pipeline.training.callbacks import make_validation_iterator_reuse

tf = import_tensorflow()


def _fit(reuse: bool, monkeypatch) -> tuple[dict, int]:
    """Three epochs of a small classifier with a repeated validation set cut into 3 batches per
    pass, as the worker feeds it (DatasetCreator); returns the history and how many iterators
    ``fit`` made over its datasets."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 3, 64)
    xv, yv = rng.normal(size=(15, 4)).astype(np.float32), rng.integers(0, 3, 15)
    creator = tf.keras.utils.experimental.DatasetCreator
    train = creator(lambda _: tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat())
    val = creator(lambda _: tf.data.Dataset.from_tensor_slices((xv, yv)).batch(5).repeat())
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)])
    model.compile(
        "adam",
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ["accuracy"],
    )
    made = []
    original = tf.data.Dataset.__iter__

    def counted(dataset):
        made.append(dataset)
        return original(dataset)

    monkeypatch.setattr(tf.data.Dataset, "__iter__", counted)
    history = model.fit(
        train,
        epochs=3,
        steps_per_epoch=4,
        validation_data=val,
        validation_steps=3,
        callbacks=[make_validation_iterator_reuse()] if reuse else [],
        verbose=0,
    )
    monkeypatch.undo()
    return history.history, len(made)


def test_one_validation_iterator_serves_every_epoch_with_the_same_results(monkeypatch):
    rebuilt, made_rebuilding = _fit(False, monkeypatch)
    history, made = _fit(True, monkeypatch)
    # Keras's own: one iterator for training, one per evaluation; here one for each
    assert (made_rebuilding, made) == (4, 2)
    assert history == rebuilt  # the same batches at every evaluation: identical metrics
