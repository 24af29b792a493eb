"""bench/model_files.py on a tiny model (the bench's MobileNetV2 takes minutes): each pair runs,
and both sides of each give the same outputs."""

from __future__ import annotations

from helpers.config import REPO, load_script, script_help

BENCH = REPO / "bench" / "model_files.py"


def test_help_lists_the_options():
    output = script_help(BENCH)
    for option in ("--backbone", "--size", "--classes"):
        assert option in output


def test_every_pair_runs_and_agrees(tmp_path, monkeypatch, capsys):
    import tensorflow as tf

    bench = load_script(BENCH)

    def tiny(backbone, size, classes):
        inputs = tf.keras.Input((size, size, 3))
        x = tf.keras.layers.BatchNormalization()(tf.keras.layers.Conv2D(4, 3)(inputs / 255.0))
        pooled = tf.keras.layers.GlobalAveragePooling2D()(x)
        return tf.keras.Model(inputs, tf.keras.layers.Dense(classes, activation="softmax")(pooled))

    monkeypatch.setattr(bench, "build", tiny)
    rows = bench.run(bench.parse_args(["--size", "8", "--classes", "3"]), tmp_path)
    assert [row["what"] for row in rows] == [
        "save model.keras",
        "load model.keras",
        "SavedModel save",
        "SavedModel load",
        "TFLite float32 conversion",
    ]
    assert all(row["same"] and row["plain"] > 0 and row["library"] > 0 for row in rows)
    assert "ratio" in capsys.readouterr().out
