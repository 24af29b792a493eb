"""model=custom through the stages: each Keras API from user_models/ trained on Ray, evaluated, gated,
exported and verified (the subclassed one with a custom layer and every default export), predicted
with kp-predict, and kp-check-model's one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.config import REPO, compose, run_stage, stage_output, tmp_paths
from helpers.data import ingest_and_preprocess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """digits ingested and preprocessed once: the root every run below shares ``raw``/``processed`` of."""
    root = tmp_path_factory.mktemp("custom")
    config = compose(*tmp_paths(root))
    ingest_and_preprocess(config)
    return root


def overrides(root: Path, run: str, builder: str, *extra: str) -> list[str]:
    paths = [item for item in tmp_paths(root) if item.startswith(("paths.raw", "paths.processed"))]
    return [
        "model=custom",
        f"model.builder=user_models.examples:{builder}",
        "train.epochs=6",
        "export.latency_repeats=2",
        *paths,
        f"paths.models={root}/{run}/models",
        f"paths.reports={root}/{run}/reports",
        f"paths.exports={root}/{run}/exports",
        f"train.tensorboard_dir={root}/{run}/tensorboard",
        f"cluster.storage_dir={root}/{run}/ray",
        *extra,
    ]


@pytest.mark.parametrize(
    "builder,exports",
    [
        ("sequential_mlp", ["export.tflite=[float32]", "export.tfjs=false"]),
        ("functional_mlp", ["export.tflite=[float32]", "export.tfjs=false"]),
        (
            "subclassed_mlp",
            [],
        ),  # custom layer + subclassed model: every default export, TF.js included
    ],
)
def test_each_api_runs_through_the_stages_and_exports_verified(digits, builder, exports):
    args = overrides(digits, builder, builder, *exports)
    for stage in ("train", "evaluate", "gate", "export"):
        stage_output(run_stage(stage, *args))
    run = digits / builder
    assert (
        json.loads((run / "models" / "run.json").read_text())["model_module"]
        == "user_models.examples"
    )
    assert json.loads((run / "reports" / "metrics.json").read_text())["accuracy"] >= 0.85
    report = json.loads((run / "exports" / "report.json").read_text())
    assert all(
        check["max_abs_diff"] <= 1e-4 for check in report["artifacts"].values() if check["exact"]
    )
    if builder == "subclassed_mlp":
        assert {"saved_model", "tflite_float32", "tflite_int8", "tfjs"} <= set(report["artifacts"])
        assert all(
            check["argmax_agreement"] >= 0.98
            for name, check in report["artifacts"].items()
            if "int8" in name
        )
        sample = digits / "sample.npy"
        np.save(sample, np.full((2, 8, 8, 1), 8.0, np.float32))
        for artifact in ("saved_model", "model.tflite"):
            printed = json.loads(
                stage_output(
                    run_stage("predict", str(run / "exports" / artifact), str(sample), "--json")
                )
            )
            assert len(printed) == 2 and printed[0]["top"][0]["class"] in [
                str(c) for c in range(10)
            ]


@pytest.mark.parametrize(
    "builder,expected",
    [
        ("user_models.nowhere:build", "cannot import user_models.nowhere"),
        ("user_models.examples:nothing", "user_models.examples has no function nothing"),
        (
            "user_models.examples:task_output",
            "has the signature task_output(num_classes",
        ),
    ],
)
def test_check_model_refuses_in_one_line_and_writes_nothing(digits, builder, expected):
    before = sorted(path.name for path in digits.iterdir())
    paths = [item for item in tmp_paths(digits) if item.startswith("paths.processed")]
    result = run_stage("check_model", "model=custom", f"model.builder={builder}", *paths)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], result.stderr[
        -2000:
    ]
    assert sorted(path.name for path in digits.iterdir()) == before


def test_check_model_passes_a_good_builder_and_the_train_stage_runs_it_first(digits):
    paths = [item for item in tmp_paths(digits) if item.startswith("paths.processed")]
    stage_output(
        run_stage(
            "check_model",
            "model=custom",
            "model.builder=user_models.examples:subclassed_mlp",
            *paths,
        )
    )
    refused = run_stage("train", *overrides(digits, "refused", "task_output"))
    assert refused.returncode == 2 and "has the signature task_output" in refused.stderr
    assert not (digits / "refused").exists(), "nothing may be written before the check passes"
    assert (REPO / "user_models" / "examples.py").is_file()
