"""The TFRecord shard format every stage after preprocess reads: one ``tf.train.Example`` per example.

Each record has ``x`` (bytes: the *normalised* features as little-endian float32, C order, shape
``meta.json``'s ``input_shape``) and ``y`` (an int64 class index, or a float target for
``task: regression``). Preprocess writes the shards (:func:`serialize_example`); training streams
them (:func:`decode_examples`, :mod:`pipeline.training.inputs`); evaluation and export read a whole
split back (:func:`load_split`).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from pipeline.io import read_json

FORMAT = "tfrecord"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2): a message, bytes or a packed scalar list."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def serialize_example(features: np.ndarray, label: int | float) -> bytes:
    """One ``tf.train.Example``: float32 feature bytes ``x`` and an int64 label ``y`` (a float one for a regression target).

    Encoded here in protobuf's wire format (``example.proto``/``feature.proto``: Example.features ->
    Features.feature map entries -> Feature.bytes_list / int64_list / float_list, packed), so
    preprocess never imports TensorFlow (its import and teardown cost ~5 s per run).
    ``tests/data/test_shards.py`` checks that TensorFlow parses it into the message it builds.
    """
    x = np.ascontiguousarray(features, dtype="<f4").tobytes()
    if isinstance(label, (float, np.floating)):
        target = _field(2, _field(1, struct.pack("<f", float(label))))  # Feature.float_list
    else:  # Feature.int64_list; a negative int64 is its two's complement (10 varint bytes)
        target = _field(3, _field(1, _varint(int(label) & 0xFFFFFFFFFFFFFFFF)))
    entries = _field(1, _field(1, b"x") + _field(2, _field(1, _field(1, x)))) + _field(
        1, _field(1, b"y") + _field(2, target)
    )
    return _field(1, entries)


def _masked_crc(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated right by 15 bits plus a constant."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class TFRecordWriter:
    """Write records in TFRecord framing (what ``tf.io.TFRecordWriter`` writes, uncompressed):
    length (uint64 LE), its masked CRC-32C, the record, the record's masked CRC-32C."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close(), like TF's writer)

    def write(self, record: bytes) -> None:
        length = struct.pack("<Q", len(record))
        self._file.write(
            length
            + struct.pack("<I", _masked_crc(length))
            + record
            + struct.pack("<I", _masked_crc(record))
        )

    def close(self) -> None:
        self._file.close()


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
