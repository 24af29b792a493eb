"""csv: numeric and one-hot categorical features, missing-value strategies, string/int labels,
headerless files with an integer label column, and bad rows named by line; sklearn's tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from helpers.config import compose, data_settings, run_stage, tmp_paths
from pipeline.data.imputation import apply_fills, fit_fills
from pipeline.data.ingest import run_ingest
from pipeline.data.preprocess import run_preprocess, split_indices
from pipeline.data.shards import load_split
from pipeline.data.sources import load_source
from pipeline.errors import UserError
from pipeline.io import read_json

TABLE = """age,colour,size,label
31,red,1.5,cat
45,blue,,dog
27,red,2.5,cat
,green,3.0,bird
50,blue,4.0,dog
38,red,1.0,bird
"""


def write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def csv(path, **overrides):
    return data_settings("csv", path=path, **overrides)


def test_numeric_and_one_hot_features_with_string_labels(tmp_path):
    manifest = run_ingest(csv(write(tmp_path, TABLE), label_column="label"), tmp_path / "raw")
    assert (
        manifest["class_names"] == ["bird", "cat", "dog"] and manifest["num_examples"] == 4
    )  # drop: 2 rows had gaps
    assert manifest["feature_names"] == ["age", "colour=blue", "colour=green", "colour=red", "size"]
    x = np.load(tmp_path / "raw" / "x.npy", mmap_mode="r")
    assert x.dtype == np.float32 and x[0].tolist() == [31, 0, 0, 1, 1.5]
    assert manifest["missing_values"] == {
        "strategy": "drop",
        "per_column": {"age": 1, "size": 1},
        "rows_dropped": 2,
        "filled": "no (rows dropped)",
    }
    assert manifest["schema"]["columns"]["colour"]["vocabulary"] == ["blue", "green", "red"]


@pytest.mark.parametrize(
    "strategy,age,size", [("mean", 38.2, 2.4), ("median", 38.0, 2.5), ("most_frequent", 27.0, 1.0)]
)
def test_missing_values_stay_nan_at_ingest_and_fills_come_from_the_rows_given(
    tmp_path, strategy, age, size
):
    raw = load_source(csv(write(tmp_path, TABLE + "33,,2.0,cat\n"), missing=strategy))
    assert raw.x.shape == (7, 5) and raw.missing_allowed
    assert np.isnan(raw.x[3, 0]) and np.isnan(raw.x[1, 4]) and np.isnan(raw.x[6, 1:4]).all(), (
        "a missing category: NaN across its one-hot"
    )
    fill, per_column = fit_fills(
        raw.x[:6], raw.columns, raw.feature_names, strategy
    )  # the "train" rows: all but the last
    assert per_column == {"age": pytest.approx(age), "colour": "red", "size": pytest.approx(size)}
    assert apply_fills(raw.x[[3, 6]].astype(np.float64), fill).tolist() == [
        [age, 0, 1, 0, 3.0],
        [33, 0, 0, 1, 2.0],
    ]
    assert fit_fills(raw.x[5:], raw.columns, raw.feature_names, strategy)[1][
        "age"
    ] == pytest.approx(
        35.5 if strategy == "mean" else {"median": 35.5, "most_frequent": 33}[strategy]
    )


def test_embedded_categoricals_are_one_code_per_column(tmp_path):
    """data.categorical=embedding: 1 + vocabulary index, 0 for a category outside a stored schema's vocabulary, NaN when missing."""
    rows = TABLE.splitlines()[1:]
    first = csv(
        write(tmp_path, "\n".join([TABLE.splitlines()[0], *rows * 3])),
        missing="mean",
        categorical="embedding",
        label_column="label",
    )
    manifest = run_ingest(first, tmp_path / "raw")
    assert manifest["feature_names"] == ["age", "colour", "size"]
    assert manifest["schema"]["columns"]["colour"] == {
        "kind": "categorical",
        "vocabulary": ["blue", "green", "red"],
        "encoding": "embedding",
    }
    assert np.load(tmp_path / "raw" / "x.npy")[:6, 1].tolist() == [3, 1, 3, 2, 1, 3]
    new = csv(
        write(
            tmp_path,
            "age,colour,size,label\n30,purple,1,cat\n31,,2,dog\n32,blue,2,cat\n",
            "new.csv",
        ),
        missing="mean",
        on_anomaly="warn",
    )  # data.categorical is the stored schema's, whatever the setting
    raw = load_source(new, None, read_json(tmp_path / "raw" / "schema.json"))
    assert (
        raw.x[:, 1].tolist()[::2] == [0, 1]
        and np.isnan(raw.x[1, 1])
        and raw.notes["unseen_categories"] == {"colour": ["purple"]}
    )
    meta = run_preprocess(
        dataclasses.replace(
            compose().preprocess,
            normalize="standardize",
            num_shards=1,
            val_fraction=0.25,
            test_fraction=0.25,
        ),
        0,
        tmp_path / "raw",
        tmp_path / "processed",
    )
    assert meta["embeddings"] == [{"feature": 1, "column": "colour", "input_dim": 4}]
    assert (
        meta["normalization"]["offset"][1] == 0
        and meta["normalization"]["scale"][1] == 1
        and meta["normalization"]["scale"][0] != 1
    )
    codes = np.concatenate(
        [load_split(tmp_path / "processed", split)[0][:, 1] for split in ("train", "val", "test")]
    )
    assert sorted(codes.tolist()) == sorted([3, 1, 3, 2, 1, 3] * 3), (
        "codes pass through preprocess as they are"
    )


def test_preprocess_fits_fills_on_the_train_split_only(tmp_path):
    """Huge values in val/test rows must not move the fill; the fills reach meta.json for serving_raw_rows."""
    rows = (
        ["v,kind,label"]
        + [f"{i % 10},{'ab'[i % 3 == 0]},{i % 2}" for i in range(60)]
        + ["1000,b,0", "1000,b,1", ",,0", ",,1"]
    )
    raw, processed = tmp_path / "raw", tmp_path / "processed"
    run_ingest(csv(write(tmp_path, "\n".join(rows)), missing="mean"), raw)
    settings = dataclasses.replace(compose().preprocess, normalize="none", num_shards=1)
    meta = run_preprocess(settings, 0, raw, processed)
    x, y = np.load(raw / "x.npy"), np.load(raw / "y.npy")
    train = split_indices(y, settings.val_fraction, settings.test_fraction, 0)["train"]
    expected = float(np.nanmean(x[train, 0]))
    assert abs(expected - float(np.nanmean(x[:, 0]))) > 1, (
        "the 1000s are not all in train: a whole-file mean would differ"
    )
    assert meta["imputation"]["columns"]["v"] == pytest.approx(expected) and meta["columns"]["v"][
        "fill"
    ] == pytest.approx(expected)
    assert meta["imputation"]["fitted_on"] == "train" and meta["columns"]["kind"]["fill"] == "a"
    split_x = {split: load_split(processed, split)[0] for split in ("train", "val", "test")}
    assert (
        not any(np.isnan(part).any() for part in split_x.values())
        and sum(map(len, split_x.values())) == 64
    )
    gaps = [
        row
        for row in split_x["train"].tolist()
        if row[1:] == [1.0, 0.0] and row[0] == pytest.approx(expected)
    ]
    assert len(gaps) == int(np.isnan(x[train, 0]).sum()), (
        "a gap takes the fill: v = train mean, kind = a (one-hot)"
    )


def test_headerless_integer_labels_by_index(tmp_path):
    rows = "\n".join(f"{i},{i * 2},{i % 3}" for i in range(9))
    raw = load_source(csv(write(tmp_path, rows), header=False, label_column="-1"))
    assert raw.class_names == ["0", "1", "2"] and raw.feature_names == ["column_0", "column_1"]
    raw = load_source(csv(write(tmp_path, rows), header=False, label_column="0"))
    assert raw.x.shape == (9, 2) and len(raw.class_names) == 9


def test_column_names_name_a_headerless_file(tmp_path):
    path = write(tmp_path, "1,2,a\n3,4,b\n5,6,a\n")
    raw = load_source(
        csv(path, header=False, column_names=["x1", "x2", "kind"], label_column="kind")
    )
    assert raw.feature_names == ["x1", "x2"] and raw.class_names == ["a", "b"]
    with pytest.raises(UserError, match="data.column_names has 2 names but .* has 3 columns"):
        load_source(csv(path, header=False, column_names=["x1", "kind"]))


def test_missing_label_column_lists_the_columns(tmp_path):
    with pytest.raises(
        UserError, match=r"label column 'Outcome' is not in .*columns: age, colour, size, label"
    ):
        load_source(csv(write(tmp_path, TABLE), label_column="Outcome"))


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "is empty"),
        ("a,b,label\n", "has no data rows"),
        ("a,label\n1,x\n2,x\n3,x\n", "every example has label 'x'"),
        ("a,label\n1,0.5\n2,1.5\n", "non-integer numbers"),
        ("a,b,label\n1,,0\n2,,1\n", "column 'b' has no values"),
    ],
)
def test_unusable_files_are_one_line(tmp_path, text, message):
    with pytest.raises(UserError, match=message) as caught:
        run_ingest(csv(write(tmp_path, text)), tmp_path / "raw")
    assert "\n" not in str(caught.value) and not (tmp_path / "raw").exists()


def test_bad_rows_are_skipped_and_named_by_line(tmp_path):
    text = "a,b,label\n1,2,0\n3,inf,1\n4,5,\n6,7,1\n8,9,0,extra\n10,11,0\n"
    manifest = run_ingest(csv(write(tmp_path, text), on_bad_record="skip"), tmp_path / "raw")
    reasons = {item["record"]: item["reason"] for item in manifest["bad_records"]["records"]}
    assert (
        reasons["t.csv line 3"] == "a feature is inf" and reasons["t.csv line 4"] == "label missing"
    )
    assert any("malformed line" in reason for reason in reasons.values())
    assert manifest["num_examples"] == 3 and manifest["bad_records"]["count"] == 3


def test_a_word_in_a_numeric_column_is_a_bad_record(tmp_path):
    rows = "\n".join(
        f"{value},{i % 2}" for i, value in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, "n/a?", 12])
    )
    raw = load_source(csv(write(tmp_path, "glucose,label\n" + rows), on_bad_record="skip"))
    assert raw.feature_names == ["glucose"] and raw.x.shape == (11, 1)  # still numeric, not one-hot
    assert raw.bad_records == [
        {"record": "t.csv line 12", "reason": "column 'glucose' holds 'n/a?', not a number"}
    ]


def test_bad_row_under_fail_names_the_line(tmp_path):
    with pytest.raises(
        UserError, match=r"t.csv line 3: a feature is inf: .*data.on_bad_record=skip"
    ):
        run_ingest(csv(write(tmp_path, "a,label\n1,0\ninf,1\n2,1\n3,0\n")), tmp_path / "raw")


@pytest.mark.parametrize(
    "name,shape,classes",
    [("breast_cancer", (569, 30), 2), ("wine", (178, 13), 3), ("iris", (150, 4), 3)],
)
def test_sklearn_tables(tmp_path, name, shape, classes):
    manifest = run_ingest(data_settings(name), tmp_path / "raw")
    assert (manifest["num_examples"], *manifest["feature_shape"]) == shape and len(
        manifest["class_names"]
    ) == classes
    assert manifest["feature_dtype"] == "float32" and len(manifest["feature_names"]) == shape[1]


def test_stage_reports_a_missing_label_column_in_one_line(tmp_path):
    from helpers.config import assert_one_line_error

    path = write(tmp_path, TABLE)
    result = run_stage(
        "ingest",
        "data=csv",
        f"data.path={path}",
        "data.label_column=Outcome",
        *tmp_paths(tmp_path / "out"),
    )
    assert_one_line_error(result, "label column 'Outcome' is not in", "set data.label_column")
    assert not (tmp_path / "out" / "raw").exists()
