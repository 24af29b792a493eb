"""The Pima-style tabular run: experiment=pima (data=csv on a headerless CSV with the 0/1 Outcome
last, model=pima_mlp) ingests, preprocesses and trains through the library on a generated file."""

from __future__ import annotations

from pathlib import Path

from helpers.config import compose, tmp_paths
from helpers.data import write_pima_like


def test_pima_experiment_ingests_preprocesses_and_learns(tmp_path):
    from pipeline.data.ingest import run_ingest
    from pipeline.data.preprocess import run_preprocess
    from pipeline.data.shards import load_split
    from pipeline.env import import_tensorflow
    from pipeline.evaluation.evaluate import compute_metrics, predict_probabilities
    from pipeline.training.models import build_model, compile_model

    path = write_pima_like(tmp_path / "pima.csv")
    config = compose("experiment=pima", f"data.path={path}", *tmp_paths(tmp_path))
    assert (config.data.name, config.model.name, config.data.header, config.data.label_column) == (
        "csv",
        "pima_mlp",
        False,
        "Outcome",
    )
    manifest = run_ingest(config.data, Path(config.paths.raw))
    assert (
        manifest["num_examples"] == 300
        and manifest["feature_shape"] == [8]
        and manifest["class_names"] == ["0", "1"]
    )
    assert manifest["label_column"] == "Outcome" and manifest["feature_dtype"] == "float32"
    assert (
        manifest["feature_names"][1] == "Glucose"
        and manifest["schema"]["columns"]["BMI"]["kind"] == "numeric"
    )
    run_preprocess(
        config.preprocess, config.seed, Path(config.paths.raw), Path(config.paths.processed)
    )
    tf = import_tensorflow()
    tf.keras.utils.set_random_seed(0)
    x, y = load_split(Path(config.paths.processed), "train")
    model = compile_model(
        build_model(config.model, x.shape[1:], 2), config.model, config.train, 2, learning_rate=0.01
    )
    model.fit(x, y, epochs=30, batch_size=config.train.batch_size, verbose=0)
    x_test, y_test = load_split(Path(config.paths.processed), "test")
    metrics, _ = compute_metrics(
        y_test, predict_probabilities(model, x_test, 64), manifest["class_names"]
    )
    assert metrics["accuracy"] > 0.75 and metrics["auc"] > 0.8, (
        metrics
    )  # logistic regression: 0.83 on this split
