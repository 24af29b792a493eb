"""Regression targets (data.task=regression): each layer on tiny inputs, then one end-to-end run of the stages.

The fast tests check the label encoding, schema, split, TFRecord round trip, the model's output
scaling, the metrics, the gate, the export parity maths, predict's output and the config errors;
the slow one runs ingest -> preprocess -> train (Ray) -> evaluate -> gate -> export -> predict as
subprocesses on a CSV it writes and holds the model to a real floor.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from helpers.config import compose, data_settings, run_stage, stage_output, tmp_paths
from helpers.data import write_npz, write_regression_csv
from helpers.models import fit_and_save
from pipeline.errors import UserError


def regression_data(path: Path, **overrides):
    return data_settings("csv", path=path, label_column="price", task="regression", **overrides)


# ---- config ---------------------------------------------------------------------------------------


def test_the_preset_switches_a_run_to_regression_with_val_mae_as_sweep_objective():
    from pipeline.settings import available_objectives

    config = compose("experiment=regression")
    assert (config.data.name, config.data.task, config.model.metrics) == (
        "csv",
        "regression",
        ["mae"],
    )
    assert (config.sweep.objective, config.sweep.direction) == ("val_mae", "minimize")
    assert compose().data.task == "classification"  # the default stays classification
    assert {"val_mae", "val_rmse", "mse"} <= set(available_objectives(["mae", "mse", "rmse"]))
    assert (
        compose(
            "experiment=regression", "model.metrics=[mae,rmse]", "sweep.objective=val_rmse"
        ).sweep.objective
        == "val_rmse"
    )


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ("experiment=regression", "model.metrics=[accuracy,mae]"),
            "model.metrics=['accuracy', 'mae'] holds classification metric(s) accuracy but data.task=regression: use model.metrics=[mae]",
        ),
        (
            ("experiment=regression", "train.class_weight=balanced"),
            "train.class_weight='balanced' is invalid: expected none under data.task=regression",
        ),
        (
            ("experiment=regression", "model.loss=binary_crossentropy"),
            "model.loss='binary_crossentropy' is invalid: expected one of auto, mse, mae, huber",
        ),
        (
            ("data.task=regression",),
            "data.task='regression' is invalid: expected classification for data=digits",
        ),
        (
            ("data.task=ranking",),
            "data.task='ranking' is invalid: expected one of classification, regression",
        ),
        (
            ("model.metrics=[mae]",),
            "model.metrics=['mae'] is invalid: expected classification metrics (accuracy, auc, precision, recall); "
            "mae need data.task=regression",
        ),
        (
            ("model.loss=mse",),
            "model.loss='mse' is invalid: expected one of auto, sparse_categorical_crossentropy, binary_crossentropy",
        ),
        (("gate.max_mae=0",), "gate.max_mae=0.0 is invalid"),
        (("export.max_mae_increase=-1",), "export.max_mae_increase=-1.0 is invalid"),
    ],
)
def test_config_mistakes_are_one_line_naming_the_key(overrides, expected):
    with pytest.raises(UserError) as caught:
        compose(*overrides)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


# ---- ingest: labels, checks, schema ---------------------------------------------------------------


def test_numeric_target_is_kept_as_float_with_label_stats(tmp_path):
    from pipeline.data.ingest import run_ingest

    path = tmp_path / "t.csv"
    path.write_text("x,city,price\n1,a,10.5\n2,b,-3.25\n3,a,7\n4,b,0.125\n")
    manifest = run_ingest(regression_data(path), tmp_path / "raw")
    y = np.load(tmp_path / "raw" / "y.npy")
    assert y.dtype == np.float32 and y.tolist() == [10.5, -3.25, 7.0, 0.125]
    assert (
        manifest["task"] == "regression"
        and manifest["class_names"] == []
        and "class_counts" not in manifest
    )
    assert manifest["label_stats"] == pytest.approx(
        {"min": -3.25, "max": 10.5, "mean": 3.59375, "std": float(np.std(y.astype(float)))}
    )
    schema = json.loads((tmp_path / "raw" / "schema.json").read_text())
    assert schema["task"] == "regression" and schema["label"]["stats"] == manifest["label_stats"]
    assert manifest["feature_names"] == ["x", "city=a", "city=b"]


def test_bad_targets_are_bad_records_under_skip_and_one_line_under_fail(tmp_path):
    from pipeline.data.ingest import run_ingest

    path = tmp_path / "t.csv"
    path.write_text("x,price\n1,1.5\n2,abc\n3,\n4,inf\n5,2.5\n6,4\n")
    manifest = run_ingest(regression_data(path, on_bad_record="skip"), tmp_path / "raw")
    assert np.load(tmp_path / "raw" / "y.npy").tolist() == [1.5, 2.5, 4.0]
    reasons = {record["record"]: record["reason"] for record in manifest["bad_records"]["records"]}
    assert reasons == {
        "t.csv line 3": "label 'abc' is not a number (data.task=regression needs a numeric target)",
        "t.csv line 4": "label missing",
        "t.csv line 5": "label inf is not finite (data.task=regression needs a numeric target)",
    }
    path.write_text("x,price\n1,1.5\n2,abc\n3,2\n")
    with pytest.raises(
        UserError,
        match=r"^data 'csv': t.csv line 3: label 'abc' is not a number .*set data.on_bad_record=skip$",
    ):
        run_ingest(regression_data(path), tmp_path / "raw2")
    assert not (tmp_path / "raw2").exists()


def test_constant_target_and_non_integer_classes_say_what_to_do(tmp_path):
    from pipeline.data.ingest import run_ingest

    path = tmp_path / "t.csv"
    path.write_text("x,price\n1,2.5\n2,2.5\n3,2.5\n")
    with pytest.raises(
        UserError, match="every example has target 2.5: a regression needs a target that varies"
    ):
        run_ingest(regression_data(path), tmp_path / "raw")
    path.write_text("x,price\n1,2.5\n2,3.5\n")
    with pytest.raises(UserError, match="non-integer numbers .*set data.task=regression"):
        run_ingest(data_settings("csv", path=str(path), label_column="price"), tmp_path / "raw")


def test_npz_with_float_targets(tmp_path):
    from pipeline.data.ingest import run_ingest

    x, y = np.arange(20, dtype=np.float32).reshape(10, 2), np.linspace(-1, 1, 10)
    path = write_npz(tmp_path / "d.npz", x, y)
    manifest = run_ingest(data_settings("npz", path=path, task="regression"), tmp_path / "raw")
    assert (
        manifest["task"] == "regression" and np.load(tmp_path / "raw" / "y.npy").dtype == np.float32
    )
    with pytest.raises(
        UserError,
        match=r"labels have dtype float64: expected integer class indices \(a numeric target\? set data.task=regression\)",
    ):
        run_ingest(data_settings("npz", path=path), tmp_path / "raw2")
    write_npz(path, x, np.where(np.arange(10) == 4, np.nan, y))
    with pytest.raises(UserError, match="index 4: target nan is NaN or inf"):
        run_ingest(data_settings("npz", path=path, task="regression"), tmp_path / "raw3")


def test_schema_flags_targets_outside_the_stored_range_and_a_task_change(tmp_path):
    from pipeline.data.ingest import run_ingest

    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_text("x,price\n1,1\n2,2.5\n3,4\n")
    run_ingest(regression_data(old), tmp_path / "raw")
    new.write_text("x,price\n1,1.5\n2,9.5\n3,3\n")
    warned = run_ingest(
        regression_data(new, schema=str(tmp_path / "raw"), on_anomaly="warn"), tmp_path / "raw2"
    )
    assert {
        "feature": "label",
        "anomaly": "target values span [1.5, 9.5], outside the schema's range [1, 4]",
    } in warned["anomalies"]
    classes = tmp_path / "classes.csv"
    classes.write_text("x,price\n1,1\n2,2\n3,1\n")
    with pytest.raises(
        UserError,
        match=r"data.schema=.*raw holds a regression schema but data.task=classification: set data.task=regression",
    ):
        run_ingest(
            data_settings(
                "csv", path=str(classes), label_column="price", schema=str(tmp_path / "raw")
            ),
            tmp_path / "raw3",
        )


# ---- preprocess: split, records, meta -------------------------------------------------------------


def test_regression_split_is_seeded_and_spans_the_target_range():
    from pipeline.data.preprocess import split_indices, strata

    y = np.random.default_rng(1).exponential(10, 500).astype(np.float32)
    assert np.bincount(strata(y)).tolist() == [50] * 10  # equal quantile bins
    first, again = split_indices(y, 0.1, 0.2, seed=3), split_indices(y, 0.1, 0.2, seed=3)
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert sorted(np.concatenate(list(first.values())).tolist()) == list(range(500))
    for name in ("train", "val", "test"):  # every split holds each decile of the target
        assert set(strata(y)[first[name]]) == set(range(10)), name


def test_float_targets_round_trip_through_tfrecords():
    import tensorflow as tf

    from pipeline.data.shards import decode_examples, serialize_example

    targets = np.array([1.25, -3.5e3, 7e-4], dtype=np.float32)
    records = [
        serialize_example(np.full(2, index, np.float32), target)
        for index, target in enumerate(targets)
    ]
    x, y = decode_examples(tf.constant(records), [2], "regression")
    assert (
        y.dtype == tf.float32
        and y.numpy().tolist() == targets.tolist()
        and x.numpy()[2].tolist() == [2.0, 2.0]
    )
    _, labels = decode_examples(
        tf.constant([serialize_example(np.zeros(2, np.float32), np.int64(4))]), [2]
    )
    assert labels.dtype == tf.int64 and labels.numpy().tolist() == [4]


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """The regression CSV ingested and preprocessed in-process: (config, root, meta)."""
    from pipeline.data.ingest import run_ingest
    from pipeline.data.preprocess import run_preprocess

    root = tmp_path_factory.mktemp("regression")
    path = write_regression_csv(root / "table.csv", rows=300)
    config = compose(
        "experiment=regression", f"data.path={path}", "data.label_column=price", *tmp_paths(root)
    )
    run_ingest(config.data, Path(config.paths.raw))
    return (
        config,
        root,
        run_preprocess(
            config.preprocess, config.seed, Path(config.paths.raw), Path(config.paths.processed)
        ),
    )


def test_meta_records_the_task_and_the_train_target_statistics(processed):
    from pipeline.data.shards import load_split
    from pipeline.training.inputs import class_weight_table

    config, _, meta = processed
    _, y_train = load_split(Path(config.paths.processed), "train")
    assert (
        meta["task"] == "regression" and meta["class_names"] == [] and meta["class_weights"] == []
    )
    assert y_train.dtype == np.float32 and len(y_train) == 210
    assert meta["target"]["mean"] == pytest.approx(float(np.mean(y_train.astype(float))), rel=1e-6)
    assert meta["target"]["std"] == pytest.approx(float(np.std(y_train.astype(float))), rel=1e-6)
    assert class_weight_table(meta, "none") is None
    with pytest.raises(
        UserError, match="train.class_weight=balanced needs classes .*set train.class_weight=none"
    ):
        class_weight_table(meta, "balanced")


# ---- models ---------------------------------------------------------------------------------------


def test_linear_output_is_rescaled_to_the_target_units_inside_the_model():
    from pipeline.training.models import build_model, compile_model, loss_name

    config = compose("experiment=regression", "model.metrics=[mae,mse,rmse]")
    model = build_model(config.model, (3,), 0, target={"mean": 50.0, "std": 4.0})
    assert model.output_names == ["predictions"] and model.output_shape == (None, 1)
    kernel, _ = model.get_layer("standardized_target").get_weights()
    model.get_layer("standardized_target").set_weights(
        [np.zeros_like(kernel), np.array([1.5], np.float32)]
    )
    assert model.predict(np.ones((2, 3)), verbose=0).ravel().tolist() == [
        56.0,
        56.0,
    ]  # 50 + 4 * 1.5
    compile_model(model, config.model, config.train, 0)
    assert loss_name(config.model, 0) == "mse" and [
        metric.name for metric in model.compiled_metrics._user_metrics
    ] == ["mae", "mse", "rmse"]
    with pytest.raises(UserError, match="needs the target's train mean and std"):
        build_model(config.model, (3,), 0)
    with pytest.raises(
        UserError,
        match=r"model.metrics=\['accuracy'\] holds classification metric\(s\) accuracy .*use model.metrics=\[mae\]",
    ):
        compile_model(
            model, dataclasses.replace(config.model, metrics=["accuracy"]), config.train, 0
        )
    with pytest.raises(
        UserError, match="model.loss=mse does not fit class labels: set model.loss=auto"
    ):
        loss_name(dataclasses.replace(config.model, loss="mse"), 3)


def test_loss_in_target_stds_trains_a_huge_target_with_plain_sgd_and_survives_a_checkpoint(
    tmp_path,
):
    import tensorflow as tf

    from pipeline.training.models import build_model, compile_model

    config = compose(
        "experiment=regression",
        "train.optimizer=sgd",
        "train.learning_rate=0.05",
        "train.steps_per_execution=1",
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    y = (2e6 + 3e5 * (x @ np.array([1.0, -0.5, 0.25]))).astype(
        np.float32
    )  # millions: an MSE in these units explodes under SGD
    tf.keras.utils.set_random_seed(0)
    model = build_model(
        config.model, (3,), 0, target={"mean": float(y.mean()), "std": float(y.std())}
    )
    compile_model(model, config.model, config.train, 0)
    history = model.fit(x, y, epochs=15, batch_size=32, verbose=0).history
    assert (
        np.all(np.isfinite(history["loss"])) and history["loss"][-1] < 0.05 * history["loss"][0]
    ), history["loss"]
    assert history["mae"][-1] < 0.1 * float(y.std())  # the metric stays in the target's units
    model.save(str(tmp_path / "model.keras"), save_format="keras_v3")
    restored = tf.keras.models.load_model(
        str(tmp_path / "model.keras")
    )  # compiled, as a resumed run loads it
    assert restored.loss.get_config()["scale"] == pytest.approx(float(y.std()))
    assert restored.evaluate(x, y, verbose=0)[0] == pytest.approx(
        model.evaluate(x, y, verbose=0)[0], rel=1e-5
    )


def test_rescaling_stays_float32_under_mixed_precision():
    import tensorflow as tf

    from pipeline.training.models import build_model

    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:  # a target around 1e5 overflows float16 (max 65504)
        model = build_model(
            compose("experiment=regression").model, (3,), 0, target={"mean": 1e5, "std": 10.0}
        )
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    predicted = model.predict(np.zeros((2, 3), np.float32), verbose=0)
    assert np.all(np.isfinite(predicted)) and np.allclose(predicted, 1e5, rtol=1e-3)


# ---- evaluate, gate, export maths, predict --------------------------------------------------------


def test_regression_metrics_on_known_values():
    from pipeline.evaluation.evaluate import regression_metrics

    metrics = regression_metrics(
        np.array([1.0, 2.0, 3.0, 4.0]), np.array([[1.5], [2.0], [2.0], [5.0]])
    )
    assert metrics == pytest.approx(
        {
            "loss": 0.5625,
            "mse": 0.5625,
            "rmse": 0.75,
            "mae": 0.625,
            "r2": 1 - 2.25 / 5.0,
            "num_examples": 4,
        }
    )
    assert (
        regression_metrics(np.array([1.0, 3.0]), np.array([2.0, 2.0]))["r2"] == 0.0
    )  # the mean predicts nothing


def test_evaluate_writes_every_declared_report(processed):
    from pipeline.evaluation.evaluate import REPORT_FILES, run_evaluate

    config, root, meta = processed
    fit_and_save(config, epochs=3)
    metrics = run_evaluate(
        config.evaluate, Path(config.paths.processed), Path(config.paths.models), root / "reports"
    )
    assert (
        set(metrics) == {"loss", "mse", "rmse", "mae", "r2", "num_examples"}
        and metrics["num_examples"] == 60
    )
    assert all((root / "reports" / name).is_file() for name in REPORT_FILES)
    rows = (root / "reports" / "confusion.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 61
    pairs = np.array([[float(value) for value in row.split(",")] for row in rows[1:]])
    assert np.mean(np.abs(pairs[:, 0] - pairs[:, 1])) == pytest.approx(metrics["mae"], rel=1e-4)
    assert "note" in json.loads((root / "reports" / "per_class.json").read_text())
    assert (root / "reports" / "confusion.png").read_bytes()[:4] == b"\x89PNG"


REGRESSION_METRICS = {
    "loss": 0.36,
    "mse": 0.36,
    "rmse": 0.6,
    "mae": 0.45,
    "r2": 0.93,
    "num_examples": 120,
}


def test_gate_uses_the_regression_thresholds_and_says_which_ran(tmp_path):
    from pipeline.evaluation.gate import run_gate

    settings = compose("experiment=regression").gate
    metrics_path = tmp_path / "metrics.json"
    metrics_path.write_text(json.dumps(REGRESSION_METRICS))
    blessing = run_gate(
        dataclasses.replace(settings, min_accuracy=0.99), metrics_path, tmp_path / "blessing.json"
    )
    assert (
        blessing["blessed"]
        and blessing["task"] == "regression"
        and [check["name"] for check in blessing["checks"]] == ["r2 >= gate.min_r2"]
    )
    assert blessing["not_applicable"] == ["gate.min_accuracy", "gate.max_accuracy_regression"]
    with pytest.raises(
        UserError, match=r"not blessed: mae 0.4500 fails <= gate.max_mae \(0.4000\)"
    ):
        run_gate(
            dataclasses.replace(settings, max_mae=0.4), metrics_path, tmp_path / "blessing.json"
        )
    with pytest.raises(UserError, match=r"r2 0.9300 fails >= gate.min_r2 \(0.9500\)"):
        run_gate(
            dataclasses.replace(settings, min_r2=0.95), metrics_path, tmp_path / "blessing.json"
        )
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({**REGRESSION_METRICS, "mae": 0.42, "rmse": 0.58}))
    relative = dataclasses.replace(settings, baseline=str(baseline), max_error_increase=0.1)
    names = [
        check["name"]
        for check in run_gate(relative, metrics_path, tmp_path / "blessing.json")["checks"]
    ]
    assert names[1:] == [
        "mae <= baseline mae x (1 + gate.max_error_increase)",
        "rmse <= baseline rmse x (1 + gate.max_error_increase)",
    ]
    with pytest.raises(
        UserError,
        match=r"mae 0.4500 fails <= baseline mae x \(1 \+ gate.max_error_increase\) \(0.4200\)",
    ):
        run_gate(
            dataclasses.replace(relative, max_error_increase=0.0),
            metrics_path,
            tmp_path / "blessing.json",
        )
    baseline.write_text(json.dumps({"accuracy": 0.9, "loss": 0.3}))
    with pytest.raises(UserError, match="baseline .* has no 'mae'"):
        run_gate(relative, metrics_path, tmp_path / "blessing.json")
    nothing = run_gate(
        dataclasses.replace(settings, min_r2=None), metrics_path, tmp_path / "blessing.json"
    )
    assert (
        nothing["blessed"]
        and nothing["checks"] == []
        and "no threshold is set" in nothing["reason"]
    )


def test_parity_maths_in_target_units_and_std():
    from pipeline.export.report import markdown_report, regression_failures, regression_parity

    y, reference = (
        np.array([10.0, 20.0, 30.0, 40.0]),
        np.array([11.0, 19.0, 30.0, 42.0]),
    )  # Keras MAE 1.0
    check = regression_parity(
        np.array([[11.5], [19.0], [30.0], [42.5]]), y, reference, target_std=5.0
    )
    assert check == pytest.approx(
        {"max_abs_diff": 0.5, "max_diff_in_std": 0.1, "mae": 1.25, "mae_increase": 0.25}
    )
    report = {
        "task": "regression",
        "tolerance": 1e-4,
        "max_mae_increase": 0.05,
        "keras_mae": 1.0,
        "target_std": 5.0,
        "num_test_examples": 4,
        "skipped": {},
        "artifacts": {
            "tflite_float32": {
                **check,
                "path": "model.tflite",
                "exact": True,
                "size_bytes": 10,
                "latency_ms_batch1": 0.1,
            }
        },
    }
    assert regression_failures(report).startswith(
        "export: the tflite_float32 export differs from the trained model by 0.5 "
        "(0.1 target std > export.tolerance=0.0001)"
    )
    report["artifacts"]["tflite_float32"]["exact"] = False
    assert (
        "test MAE 1.25 is 25.0% above the trained model's 1 (> export.max_mae_increase=0.05)"
        in regression_failures(report)
    )
    report["max_mae_increase"] = 0.3
    assert regression_failures(report) is None
    markdown = markdown_report(report)
    assert (
        "| tflite_float32 (`model.tflite`) | 0.0 KiB | 5.00e-01 | 1.25 | +25.00% | 0.100 |"
        in markdown
    )
    assert (
        "within 0.0001 train target std (0.0005 in the target's units); every artifact's MAE may be at most 30% higher."
        in markdown
    )


def test_predict_prints_numbers_not_classes(monkeypatch, tmp_path):
    import pipeline.export.predict as predict
    from pipeline.export.predict import Predictor, format_results, run_predict

    fake = Predictor(tmp_path, [2], [], 1.0, lambda x: x.sum(axis=1) * 1.5, task="regression")
    monkeypatch.setattr(predict, "load_predictor", lambda path: fake)
    np.save(tmp_path / "rows.npy", np.array([[1.0, 2.0], [0.5, 0.25]], np.float32))
    results = run_predict(tmp_path / "model", [tmp_path / "rows.npy"], k=3, progress=False)
    assert results == [
        {"input": f"{tmp_path}/rows.npy:1", "prediction": 4.5},
        {"input": f"{tmp_path}/rows.npy:2", "prediction": 1.125},
    ]
    assert format_results(results) == f"{tmp_path}/rows.npy:1: 4.5\n{tmp_path}/rows.npy:2: 1.125"


# ---- end to end -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_regression_run_end_to_end_through_the_stages(tmp_path):
    """ingest -> preprocess -> train (Ray, 1 worker) -> evaluate -> gate -> export -> predict on a 600-row CSV.

    The city column is embedded (data.categorical=embedding) and the numeric features noised: the Ray workers build
    the embedding model from meta.json and leave the category codes out of the noise."""
    from pipeline.training.sweep import objective_value

    path = write_regression_csv(tmp_path / "table.csv")
    overrides = [
        "experiment=regression",
        f"data.path={path}",
        "data.label_column=price",
        "train.epochs=40",
        "data.categorical=embedding",
        "augment.noise=0.02",
        "export.latency_repeats=2",
        *tmp_paths(tmp_path),
    ]
    for stage in ("ingest", "preprocess", "train", "evaluate", "gate", "export"):
        stage_output(run_stage(stage, *overrides))
    meta = json.loads((tmp_path / "processed" / "meta.json").read_text())
    assert meta["embeddings"] == [{"feature": 5, "column": "city", "input_dim": 4}]
    history = json.loads((tmp_path / "models" / "history.json").read_text())
    assert (
        objective_value({key: values[-1] for key, values in history.items()}, "val_mae") > 0
    )  # what sweep.objective=val_mae reads
    curves = {
        path.name for path in (tmp_path / "models" / "curves").iterdir()
    }  # dvc plots: the regression metrics
    assert {"loss.csv", "mae.csv"} <= curves and "accuracy.csv" not in curves, curves
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["r2"] >= 0.9 and metrics["mae"] < 1.5, (
        metrics
    )  # noise alone: MAE 0.4; the mean alone: R^2 0
    assert json.loads((tmp_path / "reports" / "blessing.json").read_text())["blessed"]
    report = json.loads((tmp_path / "exports" / "report.json").read_text())
    assert report["task"] == "regression" and set(report["artifacts"]) >= {
        "saved_model",
        "tflite_float32",
        "tflite_float16",
    }
    assert all(
        check["max_diff_in_std"] <= 1e-4 for check in report["artifacts"].values() if check["exact"]
    )
    assert all(check["mae_increase"] <= 0.05 for check in report["artifacts"].values())
    if "tfjs" in report["artifacts"]:  # Node is usable here
        assert report["artifacts"]["tfjs"]["max_diff_in_std"] <= 1e-4
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "\n".join(path.read_text().splitlines()[:4]) + "\n"
    )  # header + 3 raw rows, the price column ignored
    printed = (
        stage_output(run_stage("predict", str(tmp_path / "exports" / "saved_model"), str(rows)))
        .strip()
        .splitlines()
    )
    truth = [float(line.rsplit(",", 1)[1]) for line in rows.read_text().splitlines()[1:]]
    values = [float(line.rsplit(": ", 1)[1]) for line in printed]
    assert len(values) == 3 and np.max(np.abs(np.array(values) - truth)) < 3.0, (printed, truth)
    np.save(
        tmp_path / "x.npy", np.zeros((2, 6), np.float32)
    )  # encoded features: 5 numbers and the city code (TFLite has no string ops)
    tflite = json.loads(
        stage_output(
            run_stage(
                "predict",
                str(tmp_path / "exports" / "model.tflite"),
                str(tmp_path / "x.npy"),
                "--json",
            )
        )
    )
    assert [set(item) for item in tflite] == [{"input", "prediction"}] * 2
