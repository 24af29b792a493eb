"""A user's mistake gets one line naming the problem and the fix, a non-zero exit, no traceback,
and no output written -- checked through the stage entry points exactly as a user runs them."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.config import assert_one_line_error, run_stage, tmp_paths
from helpers.data import write_npz


@pytest.mark.parametrize(
    "stage,override,fragments",
    [
        ("train", "train.epoch=3", ["unknown key 'train.epoch'"]),
        (
            "train",
            "model=resnet",
            ["unknown model 'resnet'", "backbone, cnn, custom, mlp, pima_mlp"],
        ),
        (
            "ingest",
            "data=imagenet",
            [
                "unknown data 'imagenet'",
                "breast_cancer, cifar10, cifar100, csv, digits, fashion_mnist, image_folder, iris, mnist, npz, wine",
            ],
        ),
        (
            "train",
            "model.name=resnet",
            ["model.name='resnet'", "backbone, cnn, custom, mlp, pima_mlp"],
        ),
        (
            "ingest",
            "data.name=imagenet",
            [
                "data.name='imagenet'",
                "breast_cancer, cifar10, cifar100, csv, digits, fashion_mnist, image_folder, iris, mnist, npz, wine",
            ],
        ),
        ("train", "train.epochs=0", ["train.epochs=0", "an integer > 0"]),
        ("train", "train.batch_size=-8", ["train.batch_size=-8", "an integer > 0"]),
        ("gate", "evaluate.min_accuracy=0.9", ["evaluate.min_accuracy moved to gate.min_accuracy"]),
    ],
)
def test_config_mistakes(stage, override, fragments, tmp_path):
    result = run_stage(stage, override, *tmp_paths(tmp_path))
    assert_one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_a_stage_run_before_its_inputs_exist_says_which_stage_to_run(tmp_path):
    result = run_stage("preprocess", *tmp_paths(tmp_path))
    assert_one_line_error(
        result, f"no ingested data at {tmp_path}/raw", "run the ingest stage first"
    )
    assert "Warning" not in result.stdout + result.stderr and list(tmp_path.iterdir()) == []


def test_missing_data_file(tmp_path):
    result = run_stage(
        "ingest", "data=mnist", f"data.path={tmp_path}/mnist.npz", *tmp_paths(tmp_path)
    )
    assert_one_line_error(
        result, f"{tmp_path}/mnist.npz does not exist", "place Keras's mnist.npz there"
    )
    assert not (tmp_path / "raw").exists()


def test_single_class_dataset(tmp_path):
    path = write_npz(tmp_path / "one.npz", np.random.rand(20, 4), np.zeros(20, dtype=np.int64))
    result = run_stage("ingest", "data=npz", f"data.path={path}", *tmp_paths(tmp_path))
    assert_one_line_error(result, "every example has label '0'", "at least two classes")
    assert not (tmp_path / "raw").exists()


def test_nan_in_features(tmp_path):
    x = np.random.rand(20, 4)
    x[7, 2] = np.nan
    path = write_npz(tmp_path / "nan.npz", x, np.arange(20) % 2)
    result = run_stage("ingest", "data=npz", f"data.path={path}", *tmp_paths(tmp_path))
    assert_one_line_error(result, "1 examples contain NaN or inf (first at index 7)")
    assert not (tmp_path / "raw").exists()


def test_stale_params_file_is_refused(tmp_path):
    params = tmp_path / "params.yaml"
    composed = run_stage("compose", "--output", str(params))
    assert composed.returncode == 0, composed.stderr
    params.write_text(params.read_text().replace("name: digits", "name: mnist"))
    result = run_stage("ingest", "--params", str(params))
    assert_one_line_error(result, "is stale", "data.name", "dvc repro")


def test_a_good_run_succeeds_quietly(tmp_path):
    """The contrast case: the same entry point with valid input exits 0 and writes its outputs."""
    result = run_stage("ingest", *tmp_paths(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "raw" / "manifest.json").is_file()
    assert result.stderr.strip() == ""
