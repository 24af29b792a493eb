"""Every bundled dataset and documented preset exports with its default export list (SavedModel, the TFLite
variants, TF.js), each artifact held to run_export's own checks: the four TFLite variants for classification,
int8 included; the regression preset's three (README "Regression": no int8).

One process for every case (one TensorFlow import): ingest and preprocess through the library on small data, a
few epochs fitted in-process (no Ray), then :func:`pipeline.export.run.run_export`. The Pima-like tables put features
in 0..846 next to features in 0.08..2.4: an int8 variant that quantizes the raw input misses the goals below.
"""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest

from helpers.config import compose, tmp_paths
from helpers.data import ingest_and_preprocess
from helpers.models import fit_and_save
from pipeline.export.tfjs_node import TFJS_BATCH_SIZE, tfjs_runner_status

pytestmark = pytest.mark.slow

RUNNER_STATUS = tfjs_runner_status()
INT8_MAX_ABS_DIFF = 0.05  # probabilities, classification
INT8_MIN_AGREEMENT = 0.98  # argmax agreement with the trained model, classification


def write_idx_pair(folder: Path, count: int, split: str, seed: int) -> None:
    """``<split>-images-idx3-ubyte.gz`` + labels: 28x28 noise with a bright bar whose row encodes the label (0..9)."""
    from helpers.data import idx_bytes

    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    images = rng.integers(0, 80, (count, 28, 28))
    for image, label in zip(images, labels, strict=False):
        image[2 + 2 * label : 4 + 2 * label, 4:24] = 230
    folder.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        (folder / f"{split}-{kind}-ubyte.gz").write_bytes(gzip.compress(idx_bytes(array)))


def idx_folder(root: Path) -> Path:
    folder = root / "idx"
    write_idx_pair(folder, 300, "train", seed=0)
    write_idx_pair(folder, 80, "t10k", seed=1)
    return folder


def pima_table(root: Path) -> Path:
    from helpers.data import write_pima_like

    return write_pima_like(root / "pima.csv", rows=768)


def regression_table(root: Path) -> Path:
    from helpers.data import write_regression_csv

    return write_regression_csv(root / "table.csv")


# name -> (overrides, the data file the case writes (None: bundled), epochs)
CASES = {
    "digits": (["data=digits"], None, 5),
    "iris": (["data=iris", "model=mlp"], None, 60),
    "wine": (["data=wine", "model=mlp"], None, 30),
    "breast_cancer": (["data=breast_cancer", "model=mlp"], None, 15),
    "experiment=pima": (["experiment=pima"], pima_table, 20),
    "csv+pima_mlp": (["data=csv", "model=pima_mlp", "data.header=false"], pima_table, 20),
    "experiment=regression": (
        ["experiment=regression", "data.label_column=price"],
        regression_table,
        20,
    ),
    "mnist_idx": (["data=mnist"], idx_folder, 3),
}


def exported(name: str, root: Path) -> tuple[list[str], dict]:
    """Ingest, preprocess, fit and export case ``name`` under ``root``: its ``export.tflite`` and the report."""
    from pipeline.export.run import run_export

    overrides, write_data, epochs = CASES[name]
    data_path = [f"data.path={write_data(root)}"] if write_data else []
    config = compose(*overrides, *data_path, *tmp_paths(root))
    ingest_and_preprocess(config)
    fit_and_save(config, epochs)
    settings = dataclasses.replace(
        config.export, tfjs=config.export.tfjs and RUNNER_STATUS is None, latency_repeats=0
    )
    return settings.tflite, run_export(
        settings,
        Path(config.paths.processed),
        Path(config.paths.models),
        Path(config.paths.exports),
        None,
    )


def assert_checked_in_batches(report: dict) -> None:
    """The whole split ran in batches: TF.js on the wasm backend, TFLite in batches but for a dynamic-range CNN's
    hybrid convolutions (batch 1), the SavedModel in one call."""
    from pipeline.export.tflite import TFLITE_BATCH_SIZE

    runtimes = {name: check["runtime"] for name, check in report["artifacts"].items()}
    assert runtimes["saved_model"] == {"batch_size": report["num_test_examples"]}
    for name, runtime in runtimes.items():
        if name.startswith("tflite_"):
            allowed = (
                {1, TFLITE_BATCH_SIZE} if name == "tflite_dynamic_range" else {TFLITE_BATCH_SIZE}
            )
            assert runtime["batch_size"] in allowed, (name, runtime)
    if "tfjs" in runtimes:
        assert runtimes["tfjs"] == {"backend": "wasm", "batch_size": TFJS_BATCH_SIZE}


@pytest.mark.parametrize("name", CASES)
def test_the_default_export_list_passes(name, tmp_path):
    variants, report = exported(name, tmp_path)
    regression = report["task"] == "regression"
    assert variants == ["float32", "dynamic_range", "float16", *([] if regression else ["int8"])]
    tfjs = {"tfjs"} if RUNNER_STATUS is None else set()
    assert (
        set(report["artifacts"])
        == {"saved_model", *(f"tflite_{variant}" for variant in variants)} | tfjs
    )
    assert_checked_in_batches(report)
    if regression:
        assert report["not_applicable"] == ["export.max_accuracy_drop", "export.min_agreement"]
        return
    assert report["keras_accuracy"] >= 0.7, (
        "a model that learned something: agreement means little otherwise"
    )
    int8 = report["artifacts"]["tflite_int8"]
    assert (
        int8["max_abs_diff"] <= INT8_MAX_ABS_DIFF and int8["argmax_agreement"] >= INT8_MIN_AGREEMENT
    ), int8
