"""Keras datasets from local files and the download cache (never the network): Keras's .npz,
the original IDX files (gzipped or not), CIFAR's python batches (folder or .tar.gz)."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest

from helpers.config import data_settings as data
from helpers.data import idx_bytes
from pipeline.data.ingest import run_ingest
from pipeline.data.sources import load_source
from pipeline.errors import UserError

RNG = np.random.default_rng(3)


def write_idx_folder(
    folder, count: int, prefix: str = "", gz: bool = True, splits=("train", "t10k")
):
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        for kind, array in (
            ("images-idx3", RNG.integers(0, 255, (count, 28, 28))),
            ("labels-idx1", np.arange(count) % 10),
        ):
            raw = idx_bytes(array)
            name = f"{prefix}{split}-{kind}-ubyte" + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(raw) if gz else raw)
    return folder


def cifar_batch(count: int, label_key: bytes) -> bytes:
    batch = {
        b"data": RNG.integers(0, 255, (count, 3072), dtype=np.uint8),
        label_key: list(np.arange(count) % 10),
    }
    return pickle.dumps(batch)


def write_cifar10_folder(folder):
    folder.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        (folder / name).write_bytes(cifar_batch(10, b"labels"))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]})
    )
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_idx_files(tmp_path, gz):
    folder = write_idx_folder(tmp_path / "idx", 12, gz=gz)
    raw = load_source(data("mnist", path=folder))
    assert (
        raw.x.shape == (24, 28, 28, 1)
        and raw.x.dtype == np.uint8
        and raw.y.tolist()[:3] == [0, 1, 2]
    )
    one_file = next(folder.glob("t10k-images*"))
    assert (
        len(load_source(data("mnist", path=one_file)).y) == 24
    )  # a file of the set: its folder is read


def test_fashion_mnist_test_set_only_with_a_prefix_and_class_names(tmp_path):
    folder = write_idx_folder(tmp_path / "fm", 15, prefix="fashion-", splits=("t10k",))
    manifest = run_ingest(data("fashion_mnist", path=folder), tmp_path / "raw")
    assert manifest["num_examples"] == 15 and manifest["class_names"][0] == "T-shirt/top"
    assert manifest["feature_shape"] == [28, 28, 1] and np.load(
        tmp_path / "raw" / "x.npy", mmap_mode="r"
    ).shape == (15, 28, 28, 1)


def test_fashion_mnist_from_the_keras_cache_dir(tmp_path):
    write_idx_folder(tmp_path / "cache" / "datasets" / "fashion-mnist", 5)
    raw = load_source(data("fashion_mnist", cache_dir=tmp_path / "cache"))
    assert len(raw.y) == 10


def test_idx_problems_are_one_line(tmp_path):
    folder = write_idx_folder(tmp_path / "idx", 4, gz=False, splits=("train",))
    (folder / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="no train-labels-idx1-ubyte"):
        load_source(data("mnist", path=folder))
    folder = write_idx_folder(tmp_path / "cut", 4, gz=False, splits=("train",))
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(UserError, match="is truncated"):
        load_source(data("mnist", path=folder))
    (tmp_path / "none").mkdir()
    with pytest.raises(UserError, match="no IDX files in .*place train-images-idx3-ubyte.gz"):
        load_source(data("mnist", path=tmp_path / "none"))


def test_offline_download_names_the_file_and_where(tmp_path, monkeypatch):
    import pipeline.data.sources.keras as keras_sources

    def offline(filename, origin, cache_dir, subdir):
        assert (
            origin.startswith("https://") and filename in origin
        )  # what Keras's get_file would fetch
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras_sources, "fetch", offline)
    with pytest.raises(
        UserError,
        match=f"place cifar-10-python.tar.gz at {tmp_path}/datasets/cifar-10-python.tar.gz or set data.path",
    ):
        load_source(data("cifar10", cache_dir=tmp_path))
    with pytest.raises(
        UserError, match=f"place train-images-idx3-ubyte.gz at {tmp_path}/datasets/fashion-mnist/"
    ):
        load_source(data("fashion_mnist", cache_dir=tmp_path))


def test_cifar10_from_the_extracted_folder_or_its_parent(tmp_path):
    folder = write_cifar10_folder(tmp_path / "cifar-10-batches-py")
    for path in (folder, tmp_path):
        raw = load_source(data("cifar10", path=path))
        assert raw.x.shape == (30, 32, 32, 3) and raw.class_names[0] == "c0" and raw.y.max() == 9


def test_cifar10_pixels_are_unpacked_channel_last(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    pixels = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(
        np.uint8
    )[None]
    (folder / "test_batch").write_bytes(
        pickle.dumps({b"data": np.repeat(pixels, 2, axis=0), b"labels": [0, 1]})
    )
    raw = load_source(data("cifar10", path=folder))
    assert raw.x[0, 5, 7].tolist() == [10, 20, 30] and raw.class_names[1] == "automobile"


def test_cifar100_from_the_keras_tar_gz_in_the_cache(tmp_path):
    target = tmp_path / "datasets" / "cifar-100-python.tar.gz"
    target.parent.mkdir(parents=True)
    with tarfile.open(target, "w:gz") as archive:
        for name, payload in (
            ("train", cifar_batch(8, b"fine_labels")),
            ("test", cifar_batch(4, b"fine_labels")),
            ("meta", pickle.dumps({b"fine_label_names": [f"f{i}".encode() for i in range(100)]})),
        ):
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    raw = load_source(data("cifar100", cache_dir=tmp_path))
    assert (
        raw.x.shape == (12, 32, 32, 3)
        and len(raw.class_names) == 100
        and raw.class_names[3] == "f3"
    )


def test_cifar_from_a_keras_style_npz(tmp_path):
    path = tmp_path / "cifar.npz"
    np.savez(
        path,
        x_train=RNG.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8),
        y_train=(np.arange(6) % 2)[:, None],
        x_test=RNG.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8),
        y_test=np.array([[0], [1]]),
    )
    raw = load_source(data("cifar10", path=path))
    assert raw.x.shape == (8, 32, 32, 3) and raw.y.shape == (8,)


def test_cifar_batches_that_are_not_plain_arrays_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": io.BytesIO(), b"labels": [0]}))
    with pytest.raises(
        UserError, match="test_batch is not a CIFAR python batch .*refusing to load _io.BytesIO"
    ):
        load_source(data("cifar10", path=folder))
    with pytest.raises(UserError, match="holds none of CIFAR's batch files"):
        load_source(data("cifar10", path=(tmp_path / "empty").mkdir() or tmp_path / "empty"))


def test_the_sources_own_test_split_is_written_and_kept_apart_by_preprocess(tmp_path):
    """Keras's train/test (here MNIST's t10k IDX files) -> raw/split.npy -> preprocess.test_split=source."""
    from helpers.config import compose, tmp_paths
    from pipeline.data.preprocess import run_preprocess

    folder = write_idx_folder(tmp_path / "idx", 40, splits=("train",))
    write_idx_folder(folder, 20, splits=("t10k",))
    config = compose(
        "data=mnist",
        f"data.path={folder}",
        "preprocess.test_split=source",
        "preprocess.val_fraction=0.25",
        *tmp_paths(tmp_path),
    )
    manifest = run_ingest(config.data, tmp_path / "raw")
    split = np.load(tmp_path / "raw" / "split.npy")
    assert split.tolist() == [0] * 40 + [1] * 20 and manifest["source_test_examples"] == 20
    assert "split.npy" in manifest["checksums"]
    meta = run_preprocess(config.preprocess, config.seed, tmp_path / "raw", tmp_path / "processed")
    sizes = {
        name: sum(shard["num_examples"] for shard in shards)
        for name, shards in meta["splits"].items()
    }
    assert sizes["test"] == 20 and sizes["train"] + sizes["val"] == 40


def test_bad_records_are_dropped_from_the_split_too(tmp_path):
    from helpers.data import write_npz

    x = RNG.normal(size=(10, 3)).astype(np.float32)
    x[2, 1] = np.nan  # a bad record in the train part: split.npy must stay aligned with x and y
    path = write_npz(
        tmp_path / "d.npz",
        x,
        np.arange(10) % 2,
        x_test=RNG.normal(size=(4, 3)),
        y_test=np.array([0, 1, 0, 1]),
    )
    manifest = run_ingest(data("npz", path=path, on_bad_record="skip"), tmp_path / "raw")
    assert (
        np.load(tmp_path / "raw" / "split.npy").tolist() == [0] * 9 + [1] * 4
        and manifest["num_examples"] == 13
    )
    write_npz(tmp_path / "half.npz", x, np.arange(10) % 2, x_test=x)
    with pytest.raises(UserError, match="has x_test without its pair"):
        load_source(data("npz", path=tmp_path / "half.npz"))


def test_cifar100_coarse_labels_and_names(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, count in (("train", 6), ("test", 3)):
        batch = {
            b"data": RNG.integers(0, 255, (count, 3072), dtype=np.uint8),
            b"fine_labels": list(range(count)),
            b"coarse_labels": [index % 20 for index in range(count, 2 * count)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(
        pickle.dumps(
            {
                b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                b"coarse_label_names": [f"c{i}".encode() for i in range(20)],
            }
        )
    )
    coarse = load_source(data("cifar100", path=folder, label_mode="coarse"))
    assert len(coarse.class_names) == 20 and coarse.class_names[7] == "c7"
    assert (
        coarse.y.tolist() == [6, 7, 8, 9, 10, 11, 3, 4, 5]
        and coarse.is_test.tolist() == [0] * 6 + [1] * 3
    )
    fine = load_source(data("cifar100", path=folder))
    assert len(fine.class_names) == 100 and fine.y.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2]
