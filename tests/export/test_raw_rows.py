"""serving_raw_rows: a CSV-trained SavedModel takes raw CSV values (strings, numbers, missing cells)
and encodes them in the graph exactly as ingest did; predict sends raw CSV rows through it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from helpers.config import compose, tmp_paths
from helpers.data import ingest_and_preprocess
from helpers.models import fit_and_save, saved_model_cli_show
from pipeline.data.imputation import apply_fills, fit_fills
from pipeline.data.sources.tabular import encode_features
from pipeline.errors import UserError
from pipeline.export.tfjs_node import tfjs_runner_status

HEADER = ["age", "colour name", "size", "label"]


def write_mixed_csv(path: Path, rows: int = 240) -> Path:
    """A numeric, a text (with a space in its name) and a numeric column, some cells empty; label from colour and age."""
    rng = np.random.default_rng(3)
    colours = rng.choice(["red", "green", "blue"], rows)
    age, size = rng.normal(40, 12, rows), rng.uniform(0, 5, rows)
    label = np.where(colours == "red", "hot", np.where(age > 40, "old", "young"))
    lines = [",".join(HEADER)]
    for index in range(rows):
        cells = [f"{age[index]:.2f}", colours[index], f"{size[index]:.3f}", label[index]]
        if index % 17 == 3:
            cells[index % 3] = ""  # a missing value in each column in turn
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def raw_columns(path: Path) -> dict[str, np.ndarray]:
    """The CSV's feature columns as a client holds them: numbers (NaN = missing) and strings ("" = missing)."""
    import pandas as pd

    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    return {
        "age": pd.to_numeric(frame["age"], errors="coerce").to_numpy(np.float32),
        "colour_name": frame["colour name"].to_numpy(dtype=object).astype(str),
        "size": pd.to_numeric(frame["size"], errors="coerce").to_numpy(np.float32),
    }


def encoded_features(root: Path) -> np.ndarray:
    """The pipeline's own encoding of the CSV: ingest's one-hot (NaN in gaps), gaps filled with preprocess's train medians."""
    meta = json.loads((root / "processed" / "meta.json").read_text())
    raw = np.load(root / "raw" / "x.npy")
    assert np.isnan(raw).any() and meta["imputation"]["strategy"] == "median"
    return apply_fills(raw.astype(np.float64), np.asarray(meta["imputation"]["fill"])).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def csv_export(tmp_path_factory):
    """Ingest (data.missing=median, the text column embedded), preprocess, a few epochs of an MLP, and the export
    (SavedModel, TFLite float32 and TF.js when Node is there, each checked against the model): ``(root, csv, exports)``."""
    from pipeline.export.run import run_export

    root = tmp_path_factory.mktemp("csv_export")
    path = write_mixed_csv(root / "mixed.csv")
    config = compose(
        "experiment=smoke",
        "data=csv",
        f"data.path={path}",
        "data.label_column=label",
        "data.missing=median",
        "data.categorical=embedding",
        *tmp_paths(root),
    )
    ingest_and_preprocess(config)
    fit_and_save(config, epochs=30)
    settings = dataclasses.replace(
        config.export,
        tflite=[],
        tfjs=tfjs_runner_status() is None,
        latency_repeats=0,
        max_accuracy_drop=0.0,
    )
    run_export(
        settings, Path(config.paths.processed), Path(config.paths.models), root / "exports", None
    )
    return root, path, root / "exports"


def test_raw_rows_signature_encodes_exactly_like_ingest(csv_export):
    import tensorflow as tf

    root, path, exports = csv_export
    manifest = json.loads((root / "raw" / "manifest.json").read_text())
    assert manifest["feature_names"] == ["age", "colour name", "size"], (
        "the text column is one code (1 + vocabulary index)"
    )
    assert manifest["num_examples"] == 240, "data.missing=median keeps every row, in file order"
    encoded = encoded_features(root)
    loaded = tf.saved_model.load(str(exports / "saved_model"))
    columns = raw_columns(path)
    assert (
        np.isnan(columns["age"]).any()
        and (columns["colour_name"] == "").any()
        and np.isnan(columns["size"]).any()
    )
    raw_rows = loaded.signatures["serving_raw_rows"](
        **{key: tf.constant(values) for key, values in columns.items()}
    )
    reference = loaded.signatures["serving_default"](inputs=tf.constant(encoded))
    assert (
        np.abs(raw_rows["probabilities"].numpy() - reference["probabilities"].numpy()).max() <= 1e-6
    )
    assert raw_rows["class_names"].numpy()[0].astype(str).tolist() == ["hot", "old", "young"]
    assert (
        raw_rows["predicted_class"].numpy().tolist()
        == reference["predicted_class"].numpy().tolist()
    )
    unseen = loaded.signatures["serving_raw_rows"](
        age=tf.constant([40.0]), colour_name=tf.constant(["purple"]), size=tf.constant([2.0])
    )
    as_zeros = loaded.signatures["serving_default"](
        inputs=tf.constant([[40.0, 0, 2.0]])
    )  # code 0: outside the vocabulary
    assert np.allclose(
        unseen["probabilities"].numpy(), as_zeros["probabilities"].numpy(), atol=1e-6
    )  # like ingest


def test_embedded_column_is_learned_in_the_model_and_every_export_matches_it(csv_export):
    from pipeline.training.model_io import load_trained_model

    root, _, exports = csv_export
    meta = json.loads((root / "processed" / "meta.json").read_text())
    assert meta["embeddings"] == [{"feature": 1, "column": "colour name", "input_dim": 4}]
    assert meta["normalization"]["offset"][1] == 0.0 and meta["normalization"]["scale"][1] == 1.0, (
        "codes are not rescaled"
    )
    embedding = load_trained_model(root / "models").get_layer("embedding_1")
    assert embedding.input_dim == 4 and embedding.output_dim == 2, "(categories + 1) // 2 wide"
    report = json.loads((exports / "report.json").read_text())
    expected = {"saved_model", "tflite_float32"} | (
        {"tfjs"} if tfjs_runner_status() is None else set()
    )
    assert expected <= set(report["artifacts"])
    assert report["keras_accuracy"] > 0.8, (
        "above the 2/3 reachable without the colour: the embedding is learned"
    )
    for name in expected:
        assert (
            report["artifacts"][name]["max_abs_diff"] <= report["tolerance"]
            and report["artifacts"][name]["accuracy_drop"] <= 0
        ), name


@pytest.mark.parametrize("encoding", ["onehot", "embedding"])
def test_raw_rows_graph_encodes_and_fills_exactly_like_ingest_and_preprocess(encoding):
    """The in-graph encoding equals ingest's (``encode_features``) followed by preprocess's fills, for both encodings."""
    import pandas as pd

    from pipeline.env import import_tensorflow
    from pipeline.export.raw_rows import raw_rows_function

    tf = import_tensorflow()
    frame = pd.DataFrame({"b": [1.0, None, 3.0, 4.0, 5.0], "a": ["x", "y", None, "zz", "y"]})
    columns = {
        "b": {"kind": "numeric"},
        "a": {"kind": "categorical", "vocabulary": ["x", "y"], "encoding": encoding},
    }
    x, names, unseen = encode_features(frame, columns)
    assert unseen == {"a": ["zz"]} and names == (
        ["b", "a"] if encoding == "embedding" else ["b", "a=x", "a=y"]
    )
    fill, per_column = fit_fills(x, columns, names, "median")
    assert per_column == {"b": 3.5, "a": "y"}
    meta = {
        "columns": {name: {**spec, "fill": per_column[name]} for name, spec in columns.items()},
        "feature_names": names,
    }
    serve = raw_rows_function(
        tf, meta, np.zeros(len(names)), lambda features: {"features": features}
    )
    served = serve(
        tf.constant([1.0, np.nan, 3.0, 4.0, 5.0], tf.float32),
        tf.constant(["x", "y", "", " zz", "y "]),
    )["features"]
    assert served.numpy().tolist() == apply_fills(x, fill).tolist()


def test_saved_model_cli_lists_the_raw_rows_signature(csv_export):
    _, _, exports = csv_export
    section = (
        saved_model_cli_show(exports / "saved_model")
        .split("signature_def['serving_raw_rows']:")[1]
        .split("signature_def[")[0]
    )
    for expected in (
        "inputs['age']",
        "inputs['colour_name']",
        "inputs['size']",
        "dtype: DT_STRING",
        "dtype: DT_FLOAT",
        "outputs['probabilities']",
        "outputs['class_names']",
    ):
        assert expected in section, expected


def test_predict_sends_raw_csv_rows_through_the_signature(csv_export, tmp_path):
    from pipeline.export.predict import run_predict

    root, path, exports = csv_export
    rows = path.read_text().splitlines()
    reordered = (
        tmp_path / "rows.csv"
    )  # columns in another order, no label, a missing cell and a text value
    reordered.write_text(
        "size,colour name,age\n"
        + "\n".join(
            ",".join([r.split(",")[2], r.split(",")[1], r.split(",")[0]]) for r in rows[1:6]
        )
        + "\n"
    )
    results = run_predict(exports / "saved_model", [reordered], k=3, progress=False)
    encoded = encoded_features(root)[:5]
    by_features = run_predict(
        exports / "saved_model", [_npy(tmp_path, encoded)], k=3, progress=False
    )
    assert [[item["class"] for item in r["top"]] for r in results] == [
        [item["class"] for item in r["top"]] for r in by_features
    ]
    assert np.allclose(
        [[item["probability"] for item in r["top"]] for r in results],
        [[item["probability"] for item in r["top"]] for r in by_features],
        atol=1e-6,
    )
    assert "" in [r.split(",")[index] for r in rows[1:6] for index in range(3)], (
        "the rows include a missing cell"
    )
    missing = tmp_path / "missing.csv"
    missing.write_text("age,size\n40,1\n")
    with pytest.raises(
        UserError,
        match=r"missing.csv lacks the column\(s\) colour name: the model takes raw columns age, colour name, size",
    ):
        run_predict(exports / "saved_model", [missing], k=1, progress=False)
    with pytest.raises(
        UserError,
        match=r"row 2 has a non-numeric value: .*takes raw rows only as exports/saved_model",
    ):
        (tmp_path / "text.csv").write_text(
            "40,3,2.5\n41,red,2.5\n"
        )  # TFLite: encoded features only
        run_predict(exports / "model.tflite", [tmp_path / "text.csv"], k=1, progress=False)
    with pytest.raises(UserError, match=r"bad.csv row 1: 'x' in column age is not a number"):
        (tmp_path / "bad.csv").write_text("age,colour name,size\nx,red,1\n")
        run_predict(exports / "saved_model", [tmp_path / "bad.csv"], k=1, progress=False)


def _npy(directory: Path, array: np.ndarray) -> Path:
    np.save(directory / "encoded.npy", array)
    return directory / "encoded.npy"


def test_missing_values_under_missing_drop_take_train_means_and_zero_categories():
    """data.missing=drop stores no fill values (training dropped such rows): a served row still gets an answer."""
    from pipeline.data.columns import column_layout
    from pipeline.env import import_tensorflow
    from pipeline.export.raw_rows import raw_rows_function

    tf = import_tensorflow()
    meta = {
        "columns": {
            "b": {"kind": "numeric", "fill": None},
            "a": {"kind": "categorical", "vocabulary": ["x", "y"], "fill": None},
        },
        "feature_names": ["b", "a=x", "a=y"],
    }
    assert [name for name, _ in column_layout(meta["columns"], meta["feature_names"])] == [
        "b",
        "a",
    ], "file order, not sorted keys"
    serve = raw_rows_function(
        tf, meta, np.array([7.5, 0.4, 0.6]), lambda features: {"features": features}
    )
    features = serve(tf.constant([np.nan, 2.0, 3.0], tf.float32), tf.constant(["y", "", " x "]))[
        "features"
    ].numpy()
    assert features.tolist() == [[7.5, 0, 1], [2.0, 0, 0], [3.0, 1, 0]]
    with pytest.raises(ValueError, match="feature 'c' matches no stored column"):
        column_layout(meta["columns"], ["b", "c"])
