"""Quiet by default: no stage prints TensorFlow's native start-up notes or CUDA probing; -v shows them.

Every stage run through ``helpers.config.stage_output`` is checked the same way (``assert_quiet``):
train, evaluate, gate, export and predict in ``tests/stages/test_custom_models.py`` and the other
stage tests. This file runs the stages that import TensorFlow before any of that, as subprocesses on
a folder of images (ingest streams it, preprocess writes TFRecords), and checks the contrast: with
``-v`` the same run shows the notes the default hides.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers.config import NATIVE_NOISE, assert_quiet, run_stage, stage_output, tmp_paths


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("quiet") / "images"
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for index in range(30):
            pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{index}.png")
    return root


def test_ingest_preprocess_and_check_model_print_no_native_noise(image_folder, tmp_path):
    data = ["data=image_folder", f"data.path={image_folder}", *tmp_paths(tmp_path)]
    for stage in ("ingest", "preprocess"):
        output = stage_output(run_stage(stage, *data))  # asserts quiet
        assert len(output.splitlines()) <= 4, output
    checked = run_stage(
        "check_model",
        "model=custom",
        "model.builder=user_models.examples:sequential_mlp",
        f"paths.processed={tmp_path}/processed",
    )
    stage_output(checked)


def test_verbose_shows_what_the_default_hides(image_folder, tmp_path):
    data = ["data=image_folder", f"data.path={image_folder}", *tmp_paths(tmp_path)]
    stage_output(run_stage("ingest", *data))
    stage_output(run_stage("preprocess", *data))  # it never imports TensorFlow: nothing to show
    verbose = run_stage(  # the model check imports TensorFlow
        "check_model",
        "-v",
        "model=custom",
        "model.builder=user_models.examples:sequential_mlp",
        f"paths.processed={tmp_path}/processed",
    )
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert_quiet(verbose)  # -v is exempt: the helper must not flag it
    assert NATIVE_NOISE.search(verbose.stdout + verbose.stderr), (
        "with -v, TensorFlow's native start-up notes should come through"
    )
