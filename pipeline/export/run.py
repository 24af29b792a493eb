"""Deployable artifacts, each proven to behave like the trained model before it is kept.

* ``saved_model/``: raw inputs in, probabilities and class names out, preprocessing inside
  (:mod:`pipeline.export.saved_model`); for TF Serving.
* ``model.tflite``: the float32 TFLite reference, always written; ``tflite/<variant>.tflite``: one
  extra file per quantized ``export.tflite`` variant (dynamic_range, float16, int8) plus
  ``tflite/metadata.json`` (:mod:`pipeline.export.tflite`), run with the TFLite interpreter.
* ``tfjs/``: the official converter's graph model (:mod:`pipeline.export.tfjs`), run in Node.js.

Every path ``dvc.yaml`` declares exists after a successful export: a format switched off leaves its
directory holding only ``DISABLED.md`` (the switch that turned it off and how to turn it on), and
``report.json`` lists it under ``skipped``.

Only a blessed model is exported (``reports/blessing.json``, :mod:`pipeline.evaluation.gate`). Every artifact
runs on the whole test split (in batches, each artifact's ``runtime`` in the report; latency at batch 1), fed the
raw inputs a client would send; float artifacts must match the Keras model (fed the normalised inputs) within
``export.tolerance``, every artifact may lose
at most ``export.max_accuracy_drop`` accuracy and every quantized one must give the trained model's
class on at least ``export.min_agreement`` of the test examples (on a 154-row test split one
example is 0.65 points of accuracy, and flips both ways leave the accuracy as it was). Everything
is built in a temporary directory and moved into ``exports/`` only when every check passed
(``report.json`` last).

A regression model (``meta.json`` ``task: regression``) exports the same artifacts, each
predicting the target in its own units; parity then means: float artifacts within
``export.tolerance`` train target standard deviations of the Keras predictions (the scale the
network computes in, so the check means the same for a target in cents or in millions), and every
artifact's test MAE at most ``export.max_mae_increase`` (a fraction) above the trained model's;
``export.max_accuracy_drop`` and ``export.min_agreement`` do not apply (no classes, no argmax).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.data.shards import load_split
from pipeline.errors import UserError
from pipeline.evaluation.blessing import require_blessing
from pipeline.export.report import (
    Artifact,
    markdown_report,
    measure_artifact,
    measure_regression_artifact,
    report_failures,
    timed_runner,
)
from pipeline.export.saved_model import (
    MAX_PIXEL,
    converter_signature,
    is_image_shape,
    raw_inputs,
    saved_model_predictor,
    write_saved_model,
)
from pipeline.export.tfjs import tfjs_runner, write_tfjs
from pipeline.export.tflite import (
    DEFAULT_TFLITE,
    FLOAT_VARIANTS,
    TFLITE_DIR,
    TFLITE_METADATA,
    tflite_predictor,
    tflite_relative_path,
    write_tflite,
)
from pipeline.io import read_json, replace_path, write_json
from pipeline.progress import Progress
from pipeline.settings import ExportSettings
from pipeline.training.check import frozen_graph
from pipeline.training.model_io import (
    class_probabilities,
    load_trained_model,
    predict_with_progress,
)

logger = logging.getLogger(__name__)

ALL_ARTIFACTS = (
    "saved_model",
    TFLITE_DIR,
    "tfjs",
    DEFAULT_TFLITE,
)  # the paths dvc.yaml declares as outs
DISABLED_NOTE = "DISABLED.md"
REPORT_FILES = ("report.md", "report.json")  # report.json last: it marks a complete export


def train_split_inputs(
    processed_dir: Path, normalization: dict, count: int
) -> tuple[np.ndarray, float, np.ndarray]:
    """From the raw train inputs: a seeded sample (int8 calibration), the pixel factor for
    ``serving_images`` and every feature's mean (``serving_raw_rows``' fill under ``data.missing=drop``)."""
    x_train, _ = load_split(processed_dir, "train")
    raw = raw_inputs(x_train, normalization)
    chosen = np.random.default_rng(0).permutation(len(raw))[:count]
    raw_max = float(raw.max()) if raw.size else MAX_PIXEL
    return raw[chosen], (raw_max if raw_max > 0 else MAX_PIXEL) / MAX_PIXEL, raw.mean(axis=0)


def tflite_variants(settings: ExportSettings) -> list[str]:
    """float32 (``model.tflite``, always: the reference clients and ``dvc.yaml`` rely on) + the quantized extras."""
    return ["float32", *(variant for variant in settings.tflite if variant != "float32")]


def disabled_formats(settings: ExportSettings) -> dict[str, tuple[str, str]]:
    """``{directory: (the switch that turned it off, how to turn it on)}`` for every format ``settings`` leaves out."""
    disabled = {}
    if not settings.saved_model:
        disabled["saved_model"] = ("export.saved_model=false", "set export.saved_model=true")
    if len(tflite_variants(settings)) == 1:
        disabled[TFLITE_DIR] = (
            f"export.tflite={list(settings.tflite)} lists no quantized variant",
            "list dynamic_range, float16 and/or int8 in export.tflite (exports/model.tflite, float32, is always written)",
        )
    if not settings.tfjs:
        disabled["tfjs"] = ("export.tfjs=false", "set export.tfjs=true")
    return disabled


def write_disabled_note(directory: Path, switch: str, enable: str) -> None:
    """``DISABLED.md`` in ``directory``: keeps the path ``dvc.yaml`` declares, says why it holds no model."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DISABLED_NOTE).write_text(
        f"# Not exported\n\nThis format was switched off by `{switch}`.\n\n"
        f"To export it, {enable} and rerun `dvc repro export`.\n"
    )


def build_artifacts(
    model,
    meta: dict,
    settings: ExportSettings,
    representative: np.ndarray,
    pixel_to_raw: float,
    train_means: np.ndarray,
    workdir: Path,
) -> list[Artifact]:
    """Write every artifact ``settings`` asks for under ``workdir``; return how to run each."""
    saved_model_dir = workdir / "saved_model"
    signatures = write_saved_model(model, meta, pixel_to_raw, saved_model_dir, train_means)
    signature = converter_signature(meta)
    # frozen once, converted to every TFLite variant
    frozen = frozen_graph(signatures[signature].get_concrete_function())
    artifacts = []
    if settings.saved_model:
        artifacts.append(
            Artifact(
                "saved_model",
                "saved_model",
                True,
                timed_runner(saved_model_predictor(saved_model_dir)),
            )
        )
    for variant in tflite_variants(settings):
        relative = tflite_relative_path(variant)
        write_tflite(
            frozen, workdir / relative, variant, representative, settings.allow_select_tf_ops
        )
        artifacts.append(
            Artifact(
                f"tflite_{variant}",
                relative,
                variant in FLOAT_VARIANTS,
                timed_runner(tflite_predictor(workdir / relative)),
            )
        )
    write_json(
        workdir / TFLITE_METADATA,
        {
            "class_names": [str(name) for name in meta["class_names"]],
            "pixel_to_raw": pixel_to_raw,
            "task": meta.get("task", "classification"),
        },
    )
    if settings.tfjs:
        write_tfjs(
            saved_model_dir,
            workdir / "tfjs",
            meta["class_names"],
            settings.tfjs_quantization,
            signature,
        )
        name = (
            "tfjs" if settings.tfjs_quantization == "none" else f"tfjs_{settings.tfjs_quantization}"
        )
        artifacts.append(
            Artifact(
                name, "tfjs", settings.tfjs_quantization == "none", tfjs_runner(workdir / "tfjs")
            )
        )
    if not settings.saved_model:
        shutil.rmtree(saved_model_dir)  # built only to convert from
    for directory, (switch, enable) in disabled_formats(settings).items():
        write_disabled_note(workdir / directory, switch, enable)
    return artifacts


def _install(workdir: Path, output_dir: Path, report: dict) -> None:
    for relative in ALL_ARTIFACTS:  # every one exists in workdir: built, or holding DISABLED.md
        replace_path(workdir / relative, output_dir / relative)
    write_json(workdir / "report.json", report)
    (workdir / "report.md").write_text(markdown_report(report))
    for name in REPORT_FILES:
        replace_path(workdir / name, output_dir / name)


def run_export(
    settings: ExportSettings,
    processed_dir: Path,
    models_dir: Path,
    output_dir: Path,
    blessing_path: Path | None,
) -> dict:
    """Export the blessed trained model, verify every artifact, and move them into ``output_dir``.

    Args:
        blessing_path: The gate's ``blessing.json``; None skips the check (library use only).

    Raises:
        UserError: an unblessed model, nothing to export, missing inputs, a failed conversion, a
            float artifact off by more than ``settings.tolerance``, an accuracy drop above
            ``settings.max_accuracy_drop`` or a quantized artifact's agreement below ``settings.min_agreement``.
    """
    from pipeline.env import preflight

    preflight()  # the Keras flavour this pipeline needs, checked before any work
    processed_dir, output_dir = Path(processed_dir), Path(output_dir)
    if blessing_path is not None:
        require_blessing(Path(blessing_path))
    if not (processed_dir / "meta.json").is_file():
        raise UserError(
            f"export: no preprocessed data at {processed_dir}: run the preprocess stage first"
        )
    meta = read_json(processed_dir / "meta.json")
    model = load_trained_model(models_dir)
    x, y = load_split(processed_dir, "test")
    regression = meta.get("task") == "regression"
    reference = predict_with_progress(model, x, 256, "export: the trained model's predictions")
    reference = reference.reshape(len(x)) if regression else class_probabilities(reference)
    raw_x = raw_inputs(x, meta["normalization"])
    representative, pixel_to_raw, train_means = train_split_inputs(
        processed_dir, meta["normalization"], settings.calibration_examples
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".exports.tmp-", dir=output_dir) as tmp:
        workdir = Path(tmp)
        artifacts = build_artifacts(
            model, meta, settings, representative, pixel_to_raw, train_means, workdir
        )
        report = {
            "task": "regression" if regression else "classification",
            "tolerance": settings.tolerance,
            "num_test_examples": int(len(y)),
            "input_shape": meta["input_shape"],
            "class_names": [str(name) for name in meta["class_names"]],
            "pixel_to_raw": pixel_to_raw if is_image_shape(meta["input_shape"]) else None,
            **(
                regression_checks(meta, settings, artifacts, workdir, raw_x, y, reference)
                if regression
                else classification_checks(settings, artifacts, workdir, raw_x, y, reference)
            ),
            "skipped": {
                directory: switch for directory, (switch, _) in disabled_formats(settings).items()
            },
        }
        failure = report_failures(report)
        if failure:
            raise UserError(failure)
        _install(workdir, output_dir, report)
    logger.info(
        "Exported %s to %s (float artifacts within %g, %s)",
        ", ".join(report["artifacts"]),
        output_dir,
        settings.tolerance,
        f"MAE increase at most {settings.max_mae_increase:g}"
        if regression
        else f"accuracy drop at most {settings.max_accuracy_drop:g}, agreement at least {settings.min_agreement:g}",
    )
    return report


def _check_each(artifacts: list[Artifact], examples: int, measure) -> dict:
    """``{artifact name: measure(artifact)}``, with progress over every artifact's run on the split."""
    checks = {}
    with Progress(
        len(artifacts) * examples, "export: checking each artifact on the test split", "example"
    ) as progress:
        for artifact in artifacts:
            checks[artifact.name] = measure(artifact)
            progress.update(examples)
    return checks


def classification_checks(
    settings: ExportSettings,
    artifacts: list[Artifact],
    workdir: Path,
    raw_x: np.ndarray,
    y: np.ndarray,
    reference: np.ndarray,
) -> dict:
    """``report.json``'s classification part: each artifact's probabilities against the trained model's
    (within ``export.tolerance``), its test accuracy (at most ``export.max_accuracy_drop`` lower) and its
    argmax agreement with the trained model (quantized ones: at least ``export.min_agreement``)."""
    return {
        "max_accuracy_drop": settings.max_accuracy_drop,
        "min_agreement": settings.min_agreement,
        "keras_accuracy": float(np.mean(reference.argmax(axis=1) == y)),
        "artifacts": _check_each(
            artifacts,
            len(raw_x),
            lambda artifact: measure_artifact(
                artifact, workdir, raw_x, y, reference, settings.latency_repeats
            ),
        ),
    }


def regression_checks(
    meta: dict,
    settings: ExportSettings,
    artifacts: list[Artifact],
    workdir: Path,
    raw_x: np.ndarray,
    y: np.ndarray,
    reference: np.ndarray,
) -> dict:
    """``report.json``'s regression part: each artifact's predictions against the trained model's
    (within ``export.tolerance`` train target stds) and its test MAE (at most ``export.max_mae_increase`` higher).
    ``not_applicable``: the classification keys, unchecked (a regression model has no classes, no argmax)."""
    target_std = float(meta["target"]["std"])
    return {
        "max_mae_increase": settings.max_mae_increase,
        "target_std": target_std,
        "not_applicable": ["export.max_accuracy_drop", "export.min_agreement"],
        "keras_mae": float(np.mean(np.abs(reference - y))),
        "artifacts": _check_each(
            artifacts,
            len(raw_x),
            lambda artifact: measure_regression_artifact(
                artifact, workdir, raw_x, y, reference, settings.latency_repeats, target_std
            ),
        ),
    }
