"""The shard format written without TensorFlow (pipeline.data.shards): TensorFlow parses each record
into the very message its own API builds, and reads the files back through tf.data with their
checksums verified."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.shards import TFRecordWriter, serialize_example


def tf_example(features: np.ndarray, label):
    import tensorflow as tf

    x = tf.train.Feature(bytes_list=tf.train.BytesList(value=[features.astype("<f4").tobytes()]))
    if isinstance(label, (float, np.floating)):
        y = tf.train.Feature(float_list=tf.train.FloatList(value=[float(label)]))
    else:
        y = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
    return tf.train.Example(features=tf.train.Features(feature={"x": x, "y": y}))


@pytest.mark.parametrize(
    ("shape", "label"),
    [
        ((8, 8, 1), np.int64(3)),
        ((5,), 0),
        ((2,), 2**40 + 7),  # a multi-byte varint
        ((3,), -1),  # int64 two's complement
        ((4,), np.float32(-12.375)),  # a regression target
        ((4,), 1e30),
        ((28, 28, 1), np.int64(9)),  # > 127 bytes of features: a multi-byte length
        ((0,), 1),
    ],
)
def test_tensorflow_parses_the_example_it_would_have_built(shape, label):
    import tensorflow as tf

    features = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    parsed = tf.train.Example.FromString(serialize_example(features, label))
    assert parsed == tf_example(features, label)


def test_tf_data_reads_the_records_with_their_checksums(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    records = [serialize_example(rng.normal(size=300).astype(np.float32), i) for i in range(50)]
    records.append(b"")  # an empty record frames too
    writer = TFRecordWriter(tmp_path / "a.tfrecord")
    for record in records:
        writer.write(record)
    writer.close()
    read = [item.numpy() for item in tf.data.TFRecordDataset(str(tmp_path / "a.tfrecord"))]
    assert read == records
    # a flipped byte fails TensorFlow's checksum: the CRCs are real, not placeholders
    data = bytearray((tmp_path / "a.tfrecord").read_bytes())
    data[20] ^= 0xFF
    (tmp_path / "b.tfrecord").write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(tmp_path / "b.tfrecord")))


def test_preprocess_never_imports_tensorflow(tmp_path):
    """Its import and teardown cost a preprocess run ~5 s (bench/pipeline_vs_plain.py's per-stage table)."""
    import subprocess
    import sys

    from helpers.config import REPO, run_stage, stage_output, tmp_paths

    paths = tmp_paths(tmp_path)
    stage_output(run_stage("ingest", *paths))
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from helpers.config import compose\n"
        "from pipeline.data.preprocess import run_preprocess\n"
        f"config = compose(*{paths!r})\n"
        "run_preprocess(config.preprocess, config.seed, Path(config.paths.raw), Path(config.paths.processed))\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "tensorflow imported: False" in result.stdout, result.stdout + result.stderr[-2000:]
    assert sorted(path.name for path in (tmp_path / "processed").glob("train-*.tfrecord"))
