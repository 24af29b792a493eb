"""The TFRecord shard format every stage after preprocess reads: one ``tf.train.Example`` per example.

Each record has ``x`` (bytes: the *normalised* features as little-endian float32, C order, shape
``meta.json``'s ``input_shape``) and ``y`` (an int64 class index, or a float target for
``task: regression``). Preprocess writes the shards (:func:`serialize_example`); training streams
them (:func:`decode_examples`, :mod:`pipeline.training.inputs`); evaluation and export read a whole
split back (:func:`load_split`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io import read_json

FORMAT = "tfrecord"


def serialize_example(features: np.ndarray, label: int | float) -> bytes:
    """One ``tf.train.Example``: float32 feature bytes ``x`` and an int64 label ``y`` (a float one for a regression target)."""
    import tensorflow as tf

    if isinstance(label, (float, np.floating)):
        target = tf.train.Feature(float_list=tf.train.FloatList(value=[float(label)]))
    else:
        target = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
    feature = {
        "x": tf.train.Feature(
            bytes_list=tf.train.BytesList(
                value=[np.ascontiguousarray(features, dtype="<f4").tobytes()]
            )
        ),
        "y": target,
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def decode_examples(serialized, input_shape, task: str = "classification"):
    """Parse a batch of serialized examples into ``(x float32 [batch, *input_shape], y [batch])`` tensors
    (``y`` int64, or float32 for ``task="regression"``, ``meta.json``'s ``task``)."""
    import tensorflow as tf

    label = tf.io.FixedLenFeature([], tf.float32 if task == "regression" else tf.int64)
    parsed = tf.io.parse_example(
        serialized, {"x": tf.io.FixedLenFeature([], tf.string), "y": label}
    )
    x = tf.io.decode_raw(parsed["x"], tf.float32, little_endian=True)
    return tf.reshape(x, [-1, *input_shape]), parsed["y"]


def load_split(
    processed_dir: Path, split: str, shard_files: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read a split (or the given shard files of it) back into memory as ``(x float32, y int64)``.

    For evaluation and export, which need the whole (test) split at once; training streams the
    shards instead (:func:`pipeline.training.inputs.make_dataset`).
    """
    import tensorflow as tf

    processed_dir = Path(processed_dir)
    meta = read_json(processed_dir / "meta.json")
    if shard_files is None:
        shard_files = [shard["file"] for shard in meta["splits"][split]]
    records = tf.data.TFRecordDataset([str(processed_dir / name) for name in shard_files]).batch(
        4096
    )
    task = meta.get("task", "classification")
    parts = [
        (x.numpy(), y.numpy())
        for x, y in records.map(lambda batch: decode_examples(batch, meta["input_shape"], task))
    ]
    if not parts:
        return np.zeros((0, *meta["input_shape"]), np.float32), np.zeros(
            (0,), np.float32 if task == "regression" else np.int64
        )
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
