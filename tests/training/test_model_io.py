"""Loading ``model.keras``: the direct seeks inside its stored weights file read exactly what the
standard library reads, and the loaded model is the saved one."""

from __future__ import annotations

import zipfile

import numpy as np

from pipeline.training.model_io import _direct_zip_seeks, load_keras_model


def _archive(path, data: bytes) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("stored.bin", data, compress_type=zipfile.ZIP_STORED)
        archive.writestr("deflated.bin", data, compress_type=zipfile.ZIP_DEFLATED)


def test_direct_seeks_read_what_the_standard_library_reads(tmp_path):
    """Random seeks from the start, the current position and the end (backwards, forwards, past
    either end) and reads of random sizes give the same bytes and positions with and without the
    direct seek, on a stored and on a compressed member; the standard seek is back afterwards."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
    _archive(tmp_path / "a.zip", data)
    original = zipfile.ZipExtFile.seek
    steps = [
        (
            int(rng.integers(-400_000, 400_000)),
            int(rng.integers(0, 3)),
            int(rng.integers(0, 70_000)),
        )
        for _ in range(200)
    ]

    def replay(name: str) -> list:
        seen = []
        with zipfile.ZipFile(tmp_path / "a.zip") as archive, archive.open(name) as member:
            for offset, whence, size in steps:
                if whence == 0:
                    offset = abs(offset)
                seen.append((member.seek(offset, whence), member.read(size), member.tell()))
            member.seek(0)
            seen.append(member.read())  # the whole member after all that
        return seen

    for name in ("stored.bin", "deflated.bin"):
        expected = replay(name)
        with _direct_zip_seeks():
            assert zipfile.ZipExtFile.seek is not original
            assert replay(name) == expected, name
        assert expected[-1] == data
    assert zipfile.ZipExtFile.seek is original


def test_a_loaded_model_has_the_saved_weights(tmp_path):
    import tensorflow as tf

    model = tf.keras.Sequential(
        [
            tf.keras.Input((6, 6, 1)),
            tf.keras.layers.Conv2D(4, 3),
            tf.keras.layers.BatchNormalization(),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(16, 6, 6, 1)).astype(np.float32)
    model.fit(x, np.arange(16) % 3, epochs=1, verbose=0)
    model.save(str(tmp_path / "model.keras"), save_format="keras_v3")
    loaded = load_keras_model(tmp_path / "model.keras", compile=True)
    for saved, read in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, read)
    assert loaded.optimizer.iterations.numpy() == model.optimizer.iterations.numpy()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def _h5_datasets(path) -> dict:
    import h5py

    found = {}
    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as member:
        with h5py.File(member, "r") as weights:

            def visit(name, item):  # a callback returning anything but None stops the visit
                if isinstance(item, h5py.Dataset):
                    found[name] = item[()]

            weights.visititems(visit)
    return found


def test_saving_without_reading_the_tracking_metadata_writes_the_same_archive(
    tmp_path, monkeypatch
):
    """save_model (the train stage's checkpoints) skips each layer's ``_tracking_metadata`` in
    tf-keras's attribute walk, and writes the same config and the same weights, optimizer state
    included, under the same paths as a plain ``model.save``, for a model nested in a model."""
    import tensorflow as tf

    from pipeline.training.model_io import MODEL_FILE, save_model

    inner = tf.keras.Sequential(
        [tf.keras.Input((6,)), tf.keras.layers.Dense(5), tf.keras.layers.BatchNormalization()]
    )
    inputs = tf.keras.Input((6,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="softmax")(inner(inputs)))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    model.fit(x, np.arange(16) % 3, epochs=1, verbose=0)
    model.save(str(tmp_path / "plain.keras"), save_format="keras_v3")

    reads = []
    layer = type(tf.keras.layers.Dense(1)).__mro__[1]  # tf-keras's base Layer
    metadata = layer._tracking_metadata
    monkeypatch.setattr(
        layer,
        "_tracking_metadata",
        property(lambda self: reads.append(self) or metadata.fget(self)),
    )
    save_model(model, {}, tmp_path / "ours")
    assert reads == []
    ours, plain = tmp_path / "ours" / MODEL_FILE, tmp_path / "plain.keras"
    with zipfile.ZipFile(ours) as a, zipfile.ZipFile(plain) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
        assert a.read("config.json") == b.read("config.json")
    ours_weights, plain_weights = _h5_datasets(ours), _h5_datasets(plain)
    assert sorted(ours_weights) == sorted(plain_weights) and len(ours_weights) > 10
    for name, value in plain_weights.items():
        np.testing.assert_array_equal(ours_weights[name], value, err_msg=name)
    loaded = load_keras_model(ours, compile=True)
    assert loaded.optimizer.iterations.numpy() == 1 and reads == []
