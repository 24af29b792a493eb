"""Sources, ingest validation and preprocessing on tiny data the tests write themselves."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.config import data_settings
from helpers.data import write_npz
from pipeline.data.ingest import check_records, run_ingest
from pipeline.data.preprocess import apply_normalizer, fit_normalizer, run_preprocess, split_indices
from pipeline.data.records import RawData
from pipeline.data.shards import load_split
from pipeline.data.sources import load_source
from pipeline.errors import UserError
from pipeline.io import read_json, sha256_file
from pipeline.settings import DataSettings, PreprocessSettings


def data(name: str, path=None, **overrides) -> DataSettings:
    return data_settings(name, path=path, **overrides)


def test_digits_is_the_real_bundled_dataset():
    raw = load_source(data("digits"))
    assert raw.x.shape == (1797, 8, 8, 1) and raw.x.dtype == np.uint8
    assert sorted(np.unique(raw.y)) == list(range(10)) and raw.x.max() == 16


def test_mnist_reads_a_local_file_in_keras_format(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
        y_train=np.arange(20) % 10,
        x_test=rng.integers(0, 255, (10, 28, 28), dtype=np.uint8),
        y_test=np.arange(10),
    )
    manifest = run_ingest(data("mnist", path), tmp_path / "raw")
    assert manifest["num_examples"] == 30 and manifest["feature_shape"] == [28, 28, 1]
    assert manifest["class_counts"]["0"] == 3
    assert manifest["checksums"]["x.npy"] == sha256_file(tmp_path / "raw" / "x.npy")


def test_mnist_missing_or_wrong_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_source(data("mnist", tmp_path / "nope.npz"))
    write_npz(tmp_path / "other.npz", np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(UserError, match="lacks arrays"):
        load_source(data("mnist", tmp_path / "other.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read"):
        load_source(data("mnist", tmp_path / "junk.npz"))


def test_npz_source_and_class_names(tmp_path, tiny_images):
    x, y = tiny_images
    path = write_npz(tmp_path / "d.npz", x, y, class_names=np.array(["dark", "mid", "light"]))
    raw = load_source(data("npz", path))
    assert raw.class_names == ["dark", "mid", "light"] and raw.x.shape == (60, 8, 8, 1)


@pytest.mark.parametrize(
    "x,y,message",
    [
        (np.full((4, 3), np.nan), np.array([0, 1, 0, 1]), "contain NaN or inf"),
        (np.array([[1.0], [np.inf], [2.0], [3.0]]), np.array([0, 1, 0, 1]), "first at index 1"),
        (np.ones((4, 3)), np.zeros(4, dtype=np.int64), "at least two classes"),
        (np.ones((4, 3)), np.array([0, 1, 2, 7]), "labels span 0..7"),
        (np.ones((4, 3)), np.array([0, 1, 0]), "labels have shape"),
        (np.ones((4, 3)), np.array([0.5, 1, 0, 1]), "labels have dtype"),
        (np.ones((4, 3, 2, 2, 2)), np.array([0, 1, 0, 1]), "features have shape"),
    ],
)
def test_validation_rejects_bad_data(x, y, message):
    with pytest.raises(UserError, match=message) as caught:
        check_records(
            RawData(
                x=x,
                y=y,
                class_names=["a", "b", "c"][: 2 if message != "labels span 0..7" else 3],
                source="t",
            ),
            "fail",
        )
    assert "\n" not in str(caught.value)


def test_skip_policy_drops_and_lists_bad_rows():
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    x[1, 0] = np.nan
    raw = check_records(
        RawData(x=x, y=np.array([0, 1, 0, 1, 5, -1]), class_names=["a", "b"], source="t"), "skip"
    )
    assert raw.x.dtype == np.float32 and raw.y.tolist() == [0, 0, 1] and raw.bad_record_count == 3
    assert [item["record"] for item in raw.bad_records] == ["index 1", "index 4", "index 5"]
    assert raw.bad_records[1]["reason"] == "label 5 outside the label set 0..1"
    with pytest.raises(UserError, match="no usable examples remain .*first: index 0: NaN or inf"):
        check_records(
            RawData(
                x=np.full((2, 2), np.inf), y=np.array([0, 1]), class_names=["a", "b"], source="t"
            ),
            "skip",
        )


def test_failed_ingest_leaves_previous_output_untouched(tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    write_npz(tmp_path / "bad.npz", np.full((4, 2), np.nan), np.array([0, 1, 0, 1]))
    with pytest.raises(UserError):
        run_ingest(data("npz", tmp_path / "bad.npz"), out)
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_split_is_stratified_seeded_and_disjoint():
    y = np.repeat(np.arange(4), 50)
    first, again, other = (
        split_indices(y, 0.1, 0.2, 7),
        split_indices(y, 0.1, 0.2, 7),
        split_indices(y, 0.1, 0.2, 8),
    )
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["test"], other["test"])
    union = np.concatenate(list(first.values()))
    assert len(union) == len(np.unique(union)) == 200
    assert np.bincount(y[first["test"]]).tolist() == [10, 10, 10, 10]


def test_normalizer_is_fitted_on_train_only():
    train = np.array([[0.0, 10.0], [2.0, 30.0]])
    stats = fit_normalizer(train, "minmax")
    assert stats["offset"] == [0.0, 10.0] and stats["scale"] == [2.0, 20.0]
    assert apply_normalizer(np.array([[4.0, 50.0]]), stats).tolist() == [
        [2.0, 2.0]
    ]  # not clipped to train's range
    standard = fit_normalizer(train, "standardize")
    assert np.allclose(apply_normalizer(train, standard).mean(axis=0), 0)
    images = fit_normalizer(np.arange(8, dtype=np.uint8).reshape(2, 2, 2, 1), "minmax")
    assert images["offset"] == 0.0 and images["scale"] == 7.0


def test_preprocess_writes_shards_workers_can_split(tmp_path, tiny_images):
    x, y = tiny_images
    run_ingest(data("npz", write_npz(tmp_path / "d.npz", x, y)), tmp_path / "raw")
    settings = PreprocessSettings(
        val_fraction=0.2, test_fraction=0.2, normalize="minmax", num_shards=3, test_split="auto"
    )
    meta = run_preprocess(settings, 0, tmp_path / "raw", tmp_path / "out")
    assert [len(meta["splits"][s]) for s in ("train", "val", "test")] == [3, 3, 1]
    x_train, y_train = load_split(tmp_path / "out", "train")
    assert x_train.dtype == np.float32 and x_train.min() == 0.0 and x_train.max() == 1.0
    sizes = [shard["num_examples"] for shard in meta["splits"]["train"]]
    assert sum(sizes) == len(y_train) == 36 and max(sizes) - min(sizes) <= 1
    assert read_json(tmp_path / "out" / "meta.json")["input_shape"] == [8, 8, 1]


def test_preprocess_rejects_more_shards_than_examples(tmp_path, tiny_images):
    x, y = tiny_images
    run_ingest(data("npz", write_npz(tmp_path / "d.npz", x, y)), tmp_path / "raw")
    settings = PreprocessSettings(
        val_fraction=0.1, test_fraction=0.2, normalize="none", num_shards=50, test_split="auto"
    )
    with pytest.raises(UserError, match="lower preprocess.num_shards"):
        run_preprocess(settings, 0, tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "override,expected",
    [
        (
            "data.missing=zero",
            "data.missing='zero' is invalid: expected one of drop, mean, median, most_frequent",
        ),
        (
            "data.on_bad_record=ignore",
            "data.on_bad_record='ignore' is invalid: expected one of fail, skip",
        ),
        ("data.on_anomaly=log", "data.on_anomaly='log' is invalid: expected one of fail, warn"),
        (
            "data.categorical=hash",
            "data.categorical='hash' is invalid: expected one of onehot, embedding",
        ),
        ("model.embedding_dim=-1", "model.embedding_dim=-1 is invalid: expected an integer >= 0"),
        ("data.channels=2", "data.channels=2 is invalid"),
        ("data.image_size=[0,5]", "data.image_size=[0, 5] is invalid"),
        ("data.image_size=[5]", "data.image_size=[5] is invalid"),
    ],
)
def test_bad_data_keys_fail_naming_the_key(override, expected):
    from helpers.config import compose

    with pytest.raises(UserError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        compose("data=image_folder", override)
