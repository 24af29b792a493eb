"""The Pima-style tabular run: experiment=pima (data=csv on a headerless CSV with the 0/1 Outcome
last, model=pima_mlp) ingests, preprocesses and trains through the library on a generated file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers.config import compose, tmp_paths


def write_pima_like(path: Path, rows: int = 300) -> Path:
    """8 numeric columns in Pima's ranges; Outcome depends on glucose and BMI (like the real file)."""
    rng = np.random.default_rng(7)
    glucose, bmi = rng.normal(120, 30, rows).clip(0, 199), rng.normal(32, 7, rows).clip(0, 67)
    columns = [
        rng.integers(0, 17, rows),
        glucose,
        rng.normal(69, 19, rows).clip(0, 122),
        rng.integers(0, 99, rows),
        rng.integers(0, 846, rows),
        bmi,
        rng.uniform(0.08, 2.42, rows),
        rng.integers(21, 81, rows),
    ]
    outcome = (0.04 * (glucose - 120) + 0.1 * (bmi - 32) + rng.normal(0, 0.5, rows) > 0).astype(int)
    lines = [
        ",".join(f"{value:g}" for value in row) for row in zip(*columns, outcome, strict=False)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


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
