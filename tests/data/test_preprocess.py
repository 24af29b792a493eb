"""Preprocess: streamed train-only statistics, TFRecord shards, source test splits, class weights."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import pipeline.data.preprocess as preprocess
from helpers.config import compose
from helpers.data import class_sorted_source, id_table, write_raw
from pipeline.data.preprocess import (
    apply_normalizer,
    balanced_class_weights,
    fit_normalizer,
    run_preprocess,
    split_indices,
    stratified_split,
)
from pipeline.data.shards import load_split
from pipeline.errors import UserError
from pipeline.io import read_json


def settings(**changes):
    return dataclasses.replace(compose().preprocess, **changes)


@pytest.mark.parametrize("method", ["standardize", "minmax"])
@pytest.mark.parametrize("shape", [(50, 3), (50, 4, 4, 2)])
def test_chunked_statistics_equal_the_in_memory_ones(monkeypatch, method, shape):
    x = np.random.default_rng(0).normal(5.0, 3.0, size=shape)
    train = np.sort(np.random.default_rng(1).choice(50, 30, replace=False))
    whole = fit_normalizer(x, method, train)
    monkeypatch.setattr(preprocess, "CHUNK_BYTES", 7 * x[0].nbytes)  # 5 chunks, the last one short
    chunked = fit_normalizer(x, method, train)
    assert np.allclose(chunked["offset"], whole["offset"]) and np.allclose(
        chunked["scale"], whole["scale"]
    )
    axis = 0 if x.ndim == 2 else None
    expected = (
        (x[train].mean(axis=axis), x[train].std(axis=axis))
        if method == "standardize"
        else (x[train].min(axis=axis), x[train].max(axis=axis) - x[train].min(axis=axis))
    )
    assert np.allclose(chunked["offset"], expected[0]) and np.allclose(
        chunked["scale"], expected[1]
    )


def test_shards_hold_the_normalised_split_and_meta_describes_them(tmp_path):
    x, y = id_table(90, 3)
    raw = write_raw(tmp_path / "raw", x * np.array([1.0, 10.0]), y)
    meta = run_preprocess(settings(normalize="standardize", num_shards=4), 0, raw, tmp_path / "out")
    splits = split_indices(y, 0.1, 0.2, 0)
    x_raw = np.load(raw / "x.npy")
    assert meta["normalization"] == fit_normalizer(x_raw[splits["train"]], "standardize")
    for name, indices in splits.items():
        x_split, y_split = load_split(tmp_path / "out", name)
        assert x_split.dtype == np.float32 and y_split.dtype == np.int64
        order = np.argsort(apply_normalizer(x_raw[indices], meta["normalization"])[:, 0])
        mine = np.argsort(x_split[:, 0])
        assert np.allclose(
            x_split[mine], apply_normalizer(x_raw[indices], meta["normalization"])[order], atol=1e-6
        )
        assert y_split[mine].tolist() == y[indices][order].tolist()
    files = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert files == sorted(
        ["meta.json"] + [shard["file"] for shards in meta["splits"].values() for shard in shards]
    )
    assert [len(meta["splits"][name]) for name in ("train", "val", "test")] == [4, 4, 1]
    assert all(shard["file"].endswith(".tfrecord") for shard in meta["splits"]["train"])
    assert (
        meta["format"] == "tfrecord" and meta["input_shape"] == [2] and meta["test_split"] == "auto"
    )
    assert read_json(tmp_path / "out" / "meta.json") == meta


def test_every_shard_mixes_the_classes_of_a_class_sorted_source(tmp_path):
    x, y = id_table(120, 3)
    order = np.argsort(y, kind="stable")  # raw data sorted by class, as many sources ship it
    raw = write_raw(tmp_path / "raw", x[order], y[order])
    meta = run_preprocess(settings(normalize="none", num_shards=4), 0, raw, tmp_path / "out")
    for shard in meta["splits"]["train"]:
        _, labels = load_split(tmp_path / "out", "train", [shard["file"]])
        assert set(labels.tolist()) == {0, 1, 2}


def test_every_window_of_every_shard_holds_each_class_at_its_share(tmp_path, monkeypatch):
    """A class-sorted source far larger than a read chunk (and than the default shuffle buffer):
    each window of 1,000 records of every written shard is a uniform sample of the split."""
    raw = class_sorted_source(tmp_path / "raw", per_class=2500)
    monkeypatch.setattr(
        preprocess, "CHUNK_BYTES", 500 * 8 * 8
    )  # 500-row pieces, as a large folder is read
    meta = run_preprocess(settings(normalize="none", num_shards=4), 0, raw, tmp_path / "out")
    window, share = 1000, 0.1
    bound = 5 * np.sqrt(window * share * (1 - share))  # five binomial standard deviations
    checked = 0
    for name in ("train", "val", "test"):
        for shard in meta["splits"][name]:
            _, labels = load_split(tmp_path / "out", name, [shard["file"]])
            starts = range(
                0, len(labels) - window + 1, window // 2
            )  # overlapping windows (none in a short shard)
            checked += len(starts)
            for start in starts:
                counts = np.bincount(labels[start : start + window], minlength=10)
                assert np.abs(counts - window * share).max() <= bound, (
                    name,
                    shard["file"],
                    start,
                    counts.tolist(),
                )
    assert checked >= 4 * 7 + 9  # every train shard (4,375 records) and the test shard (5,000)


def test_x_is_memory_mapped_and_chunking_does_not_change_the_shards(tmp_path, monkeypatch):
    x, y = id_table(60, 2)
    raw = write_raw(tmp_path / "raw", x, y)
    run_preprocess(settings(num_shards=2), 3, raw, tmp_path / "whole")
    loads = []
    real_load = np.load

    def spy(path, *args, **kwargs):
        loads.append((str(path).rsplit("/", 1)[-1], kwargs.get("mmap_mode")))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    monkeypatch.setattr(preprocess, "CHUNK_BYTES", 5 * x[0].nbytes)
    meta = run_preprocess(settings(num_shards=2), 3, raw, tmp_path / "chunked")
    assert ("x.npy", "r") in loads
    for shards in meta[
        "splits"
    ].values():  # one global permutation: chunking changes neither content nor order
        for shard in shards:
            chunked, whole = (
                load_split(tmp_path / out, "", [shard["file"]])[0] for out in ("chunked", "whole")
            )
            assert chunked[:, 0].tolist() == whole[:, 0].tolist()


def test_source_test_split_is_kept_apart(tmp_path):
    x, y = id_table(100, 2)
    is_test = np.zeros(100, dtype=np.int8)
    is_test[80:] = 1  # the source's own test set: the last 20 examples
    raw = write_raw(tmp_path / "raw", x, y, split=is_test)
    meta = run_preprocess(
        settings(normalize="none", num_shards=2, test_split="source", val_fraction=0.25),
        0,
        raw,
        tmp_path / "src",
    )
    ids = {
        name: sorted(load_split(tmp_path / "src", name)[0][:, 0].astype(int).tolist())
        for name in ("train", "val", "test")
    }
    assert ids["test"] == list(range(80, 100)) and meta["test_split"] == "source"
    assert len(ids["val"]) == 20 and sorted(ids["train"] + ids["val"]) == list(range(80))
    assert np.bincount(y[ids["val"]]).tolist() == [10, 10]  # stratified within the pool
    run_preprocess(
        settings(normalize="none", num_shards=2, test_split="auto"), 0, raw, tmp_path / "auto"
    )
    assert sorted(load_split(tmp_path / "auto", "test")[0][:, 0].astype(int).tolist()) != list(
        range(80, 100)
    )


@pytest.mark.parametrize(
    "split,expected",
    [
        (
            None,
            "split.npy is missing: this source has no own test split; use preprocess.test_split=auto",
        ),
        (np.zeros(30, dtype=np.int8), "has shape (30,)"),
        (np.full(40, 2), "expected one 0 (train pool) or 1 (test) per example"),
        (np.zeros(40, dtype=np.int8), "marks 0 of 40 examples as test"),
    ],
)
def test_bad_source_split_is_one_line_and_writes_nothing(tmp_path, split, expected):
    x, y = id_table(40, 2)
    raw = write_raw(tmp_path / "raw", x, y, split=split)
    with pytest.raises(UserError) as caught:
        run_preprocess(settings(num_shards=2, test_split="source"), 0, raw, tmp_path / "out")
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_balanced_class_weights_match_scikit_learn(tmp_path):
    from sklearn.utils.class_weight import compute_class_weight

    y = np.repeat([0, 1, 2], [80, 15, 5])
    assert np.allclose(
        balanced_class_weights(y, 3), compute_class_weight("balanced", classes=np.arange(3), y=y)
    )
    assert balanced_class_weights(np.array([0, 0, 2]), 3) == pytest.approx(
        [0.75, 1.0, 1.5]
    )  # absent class 1: neutral
    x = np.random.default_rng(0).random((100, 2))
    meta = run_preprocess(
        settings(num_shards=2), 0, write_raw(tmp_path / "raw", x, y), tmp_path / "out"
    )
    _, y_train = load_split(tmp_path / "out", "train")
    assert meta["class_counts"] == np.bincount(y_train, minlength=3).tolist()
    assert np.allclose(
        meta["class_weights"], compute_class_weight("balanced", classes=np.arange(3), y=y_train)
    )


def test_unknown_test_split_mode_is_one_line():
    with pytest.raises(
        UserError,
        match=r"preprocess\.test_split='holdout' is invalid: expected one of auto, source",
    ):
        compose("preprocess.test_split=holdout")


def test_the_stratified_split_draws_what_scikit_learns_draws():
    """Labels of 1-11 classes (shuffled, sorted, non-contiguous), index arrays in any order,
    fractions and seeds: the same train and test, in the same order, as train_test_split; where
    scikit-learn refuses (a class of one, fewer examples than classes on a side), so does it."""
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(1)
    agreed = refused = 0
    for _ in range(400):
        n, k = int(rng.integers(4, 300)), int(rng.integers(1, 12))
        y = rng.integers(0, k, n)
        y = np.sort(y) if rng.random() < 0.3 else y * (3 if rng.random() < 0.3 else 1)
        indices = rng.permutation(n) + int(rng.integers(0, 50))
        fraction = float(rng.choice([0.05, 0.1, 0.111, 0.2, 0.25, 0.5, 0.9]))
        seed = int(rng.integers(0, 100))
        try:
            expected = train_test_split(indices, test_size=fraction, stratify=y, random_state=seed)
        except ValueError:
            with pytest.raises(ValueError):
                stratified_split(indices, y, fraction, seed)
            refused += 1
            continue
        train, test = stratified_split(indices, y, fraction, seed)
        assert train.tolist() == expected[0].tolist() and test.tolist() == expected[1].tolist()
        agreed += 1
    assert agreed > 300 and refused > 20


def test_splitting_imports_no_scikit_learn_and_refusals_are_one_line():
    script = (
        "import sys, numpy as np\n"
        "from pipeline.data.preprocess import split_indices\n"
        "split_indices(np.arange(100) % 4, 0.1, 0.2, 0)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'sklearn'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
    with pytest.raises(
        UserError,
        match=r"^preprocess: cannot split 5 examples stratified \(The "
        r"least populated classes in y have only 1 member.*\[4\]\)",
    ):
        split_indices(np.array([0, 0, 1, 1, 4]), 0.2, 0.4, 0)
