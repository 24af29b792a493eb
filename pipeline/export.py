"""Deployable artifacts, each proven to behave like the trained model before it is kept.

* ``saved_model/``: raw inputs in, probabilities and class names out, preprocessing inside
  (:mod:`pipeline.export_saved_model`); for TF Serving.
* ``model.tflite`` (float32) and ``tflite/<variant>.tflite`` (dynamic_range, float16, int8): one
  file per ``export.tflite`` variant (:mod:`pipeline.export_tflite`), run with the TFLite interpreter.
* ``tfjs/``: the official converter's graph model (:mod:`pipeline.export_tfjs`), run in Node.js.

Only a blessed model is exported (``reports/blessing.json``, :mod:`pipeline.gate`). Every artifact
runs on the whole test split, fed the raw inputs a client would send; float artifacts must match
the Keras model (fed the normalised inputs) within ``export.tolerance`` and every artifact may lose
at most ``export.max_accuracy_drop`` accuracy. Everything is built in a temporary directory and
moved into ``exports/`` only when every check passed (``report.json`` last).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.evaluate import class_probabilities, load_trained_model
from pipeline.export_report import Artifact, markdown_report, measure_artifact, report_failures, timed_runner
from pipeline.export_saved_model import MAX_PIXEL, is_image_shape, raw_inputs, saved_model_predictor, write_saved_model
from pipeline.export_tflite import DEFAULT_TFLITE, FLOAT_VARIANTS, TFLITE_DIR, TFLITE_METADATA, tflite_predictor, tflite_relative_path, write_tflite
from pipeline.export_tfjs import tfjs_runner, write_tfjs
from pipeline.gate import require_blessing
from pipeline.io import read_json, remove_path, replace_path, write_json
from pipeline.preprocess import load_split
from pipeline.settings import ExportSettings

logger = logging.getLogger(__name__)

ALL_ARTIFACTS = ("saved_model", TFLITE_DIR, "tfjs", DEFAULT_TFLITE)
REPORT_FILES = ("report.md", "report.json")  # report.json last: it marks a complete export


def calibration_inputs(processed_dir: Path, normalization: dict, count: int) -> tuple[np.ndarray, float]:
    """A seeded sample of raw train inputs (int8 calibration) and the pixel factor for ``serving_images``."""
    x_train, _ = load_split(processed_dir, "train")
    raw = raw_inputs(x_train, normalization)
    chosen = np.random.default_rng(0).permutation(len(raw))[:count]
    raw_max = float(raw.max()) if raw.size else MAX_PIXEL
    return raw[chosen], (raw_max if raw_max > 0 else MAX_PIXEL) / MAX_PIXEL


def build_artifacts(model, meta: dict, settings: ExportSettings, representative: np.ndarray, pixel_to_raw: float,
                    workdir: Path) -> list[Artifact]:
    """Write every artifact ``settings`` asks for under ``workdir``; return how to run each."""
    saved_model_dir = workdir / "saved_model"
    write_saved_model(model, meta, pixel_to_raw, saved_model_dir)
    artifacts = []
    if settings.saved_model:
        artifacts.append(Artifact("saved_model", "saved_model", True, timed_runner(saved_model_predictor(saved_model_dir))))
    for variant in settings.tflite:
        relative = tflite_relative_path(variant)
        write_tflite(saved_model_dir, workdir / relative, variant, representative, settings.allow_select_tf_ops)
        artifacts.append(Artifact(f"tflite_{variant}", relative, variant in FLOAT_VARIANTS, timed_runner(tflite_predictor(workdir / relative))))
    if settings.tflite:
        write_json(workdir / TFLITE_METADATA, {"class_names": [str(name) for name in meta["class_names"]], "pixel_to_raw": pixel_to_raw})
    if settings.tfjs:
        write_tfjs(saved_model_dir, workdir / "tfjs", meta["class_names"], settings.tfjs_quantization)
        name = "tfjs" if settings.tfjs_quantization == "none" else f"tfjs_{settings.tfjs_quantization}"
        artifacts.append(Artifact(name, "tfjs", settings.tfjs_quantization == "none", tfjs_runner(workdir / "tfjs")))
    if not settings.saved_model:
        shutil.rmtree(saved_model_dir)
    return artifacts


def _install(workdir: Path, output_dir: Path, report: dict, kept: set[str]) -> None:
    for relative in kept:
        replace_path(workdir / relative, output_dir / relative)
    for stale in set(ALL_ARTIFACTS) - kept:
        remove_path(output_dir / stale)  # a format switched off must not leave an old file behind
    write_json(workdir / "report.json", report)
    (workdir / "report.md").write_text(markdown_report(report))
    for name in REPORT_FILES:
        replace_path(workdir / name, output_dir / name)


def run_export(settings: ExportSettings, processed_dir: Path, models_dir: Path, output_dir: Path,
               blessing_path: Path | None) -> dict:
    """Export the blessed trained model, verify every artifact, and move them into ``output_dir``.

    Args:
        blessing_path: The gate's ``blessing.json``; None skips the check (library use only).

    Raises:
        UserError: an unblessed model, nothing to export, missing inputs, a failed conversion, a
            float artifact off by more than ``settings.tolerance`` or an accuracy drop above
            ``settings.max_accuracy_drop``.
    """
    processed_dir, output_dir = Path(processed_dir), Path(output_dir)
    if blessing_path is not None:
        require_blessing(Path(blessing_path))
    if not (settings.saved_model or settings.tflite or settings.tfjs):
        raise UserError("export: every format is off: set export.saved_model or export.tfjs to true, or list variants in export.tflite")
    if not (processed_dir / "meta.json").is_file():
        raise UserError(f"export: no preprocessed data at {processed_dir}: run the preprocess stage first")
    meta = read_json(processed_dir / "meta.json")
    model = load_trained_model(models_dir)
    x, y = load_split(processed_dir, "test")
    reference = class_probabilities(model.predict(x, batch_size=256, verbose=0))
    raw_x = raw_inputs(x, meta["normalization"])
    representative, pixel_to_raw = calibration_inputs(processed_dir, meta["normalization"], settings.calibration_examples)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".exports.tmp-", dir=output_dir) as tmp:
        workdir = Path(tmp)
        artifacts = build_artifacts(model, meta, settings, representative, pixel_to_raw, workdir)
        report = {
            "tolerance": settings.tolerance,
            "max_accuracy_drop": settings.max_accuracy_drop,
            "num_test_examples": int(len(y)),
            "keras_accuracy": float(np.mean(reference.argmax(axis=1) == y)),
            "input_shape": meta["input_shape"],
            "class_names": [str(name) for name in meta["class_names"]],
            "pixel_to_raw": pixel_to_raw if is_image_shape(meta["input_shape"]) else None,
            "artifacts": {artifact.name: measure_artifact(artifact, workdir, raw_x, y, reference, settings.latency_repeats)
                          for artifact in artifacts},
        }
        failure = report_failures(report)
        if failure:
            raise UserError(failure)
        kept = {artifact.relative_path.split("/")[0] for artifact in artifacts} | ({TFLITE_DIR} if settings.tflite else set())
        _install(workdir, output_dir, report, kept)
    logger.info("Exported %s to %s (float artifacts within %g, accuracy drop at most %g)", ", ".join(report["artifacts"]),
                output_dir, settings.tolerance, settings.max_accuracy_drop)
    return report
