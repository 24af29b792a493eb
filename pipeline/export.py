"""Deployable artifacts, each proven to behave like the trained model before it is kept.

* ``saved_model/``: a TensorFlow SavedModel with a ``serving_default`` signature
  (input ``inputs``: float32 ``[batch, *input_shape]``; output ``probabilities``) for TF Serving.
* ``model.tflite``: converted from that SavedModel (``TFLiteConverter.from_keras_model`` is broken
  under Keras 3, so the SavedModel route is the one that keeps working) and run with the TFLite
  interpreter.
* ``tfjs/``: the official ``tensorflowjs_converter`` (SavedModel -> graph model; it mishandles
  ``.keras`` files, tfjs#8266), run in Node.js with the pure-JS ``@tensorflow/tfjs``.

Every artifact runs on the first ``num_check_inputs`` test inputs; the max abs difference from the
Keras model goes into ``report.json``. Everything is built in a temporary directory and moved into
``exports/`` only when every check passed (``report.json`` last).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.env import quiet_native_stderr
from pipeline.errors import UserError
from pipeline.evaluate import load_trained_model
from pipeline.io import directory_size, read_json, remove_path, replace_path, write_json
from pipeline.preprocess import load_split
from pipeline.settings import ExportSettings

logger = logging.getLogger(__name__)

SIGNATURE = "serving_default"
INPUT_NAME = "inputs"
OUTPUT_NAME = "probabilities"
CONVERTER_TIMEOUT_S = 600
ALL_ARTIFACTS = ("saved_model", "model.tflite", "tfjs")


@dataclass
class Artifact:
    """One export: where it lives inside ``exports/`` and how to run it on a batch."""

    name: str
    relative_path: str
    predict: Callable[[np.ndarray], np.ndarray]


def write_saved_model(model, input_shape: list[int], directory: Path) -> None:
    """Save ``model`` as a SavedModel whose ``serving_default`` signature names its input and output."""
    from pipeline.env import import_tensorflow

    tf = import_tensorflow()
    module = tf.Module()
    module.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, *input_shape], tf.float32, name=INPUT_NAME)])
    def serve(inputs):
        return {OUTPUT_NAME: module.model(inputs, training=False)}

    module.serve = serve
    tf.saved_model.save(module, str(directory), signatures={SIGNATURE: serve})


def saved_model_predictor(directory: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Load the SavedModel back (as TF Serving would) and call its serving signature."""
    from pipeline.env import import_tensorflow

    tf = import_tensorflow()
    loaded = tf.saved_model.load(str(directory))
    signature = loaded.signatures[SIGNATURE]
    return lambda x: signature(**{INPUT_NAME: tf.constant(x, tf.float32)})[OUTPUT_NAME].numpy()


def write_tflite(saved_model_dir: Path, path: Path) -> None:
    """Convert the SavedModel to a float32 TFLite flatbuffer."""
    from pipeline.env import import_tensorflow

    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[SIGNATURE])
    try:
        with quiet_native_stderr():
            path.write_bytes(converter.convert())
    except Exception as error:  # the converter raises ConverterError and plain Exceptions alike
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"export: TFLite conversion failed: {first}: set export.tflite=false to skip it") from None


def tflite_predictor(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Run the flatbuffer with the TFLite interpreter, resizing its batch dimension to the input."""
    from pipeline.env import import_tensorflow

    tf = import_tensorflow()
    with quiet_native_stderr(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")  # LiteRT is not in TF 2.19's set
        interpreter = tf.lite.Interpreter(model_path=str(path))
        interpreter.allocate_tensors()  # the XNNPACK delegate announces itself here

    def predict(x: np.ndarray) -> np.ndarray:
        (input_detail,) = interpreter.get_input_details()
        (output_detail,) = interpreter.get_output_details()
        interpreter.resize_tensor_input(input_detail["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_detail["index"], np.ascontiguousarray(x, dtype=np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(output_detail["index"]).copy()

    return predict


def converter_executable() -> str:
    """``tensorflowjs_converter`` installed next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).with_name("tensorflowjs_converter")
    found = str(beside) if beside.exists() else shutil.which("tensorflowjs_converter")
    if not found:
        raise UserError("export: tensorflowjs_converter not found: install the project (pip install -r requirements.lock -e .) "
                        "or set export.tfjs=false")
    return found


def write_tfjs(saved_model_dir: Path, directory: Path) -> None:
    """Convert the SavedModel to a TF.js graph model with the official converter."""
    command = [converter_executable(), "--input_format=tf_saved_model", "--output_format=tfjs_graph_model",
               f"--signature_name={SIGNATURE}", "--saved_model_tags=serve", str(saved_model_dir), str(directory)]
    logger.debug("Running %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, timeout=CONVERTER_TIMEOUT_S, check=False)
    if result.returncode != 0 or not (directory / "model.json").is_file():
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        raise UserError(f"export: tensorflowjs_converter failed: {lines[-1] if lines else result.returncode}: "
                        "set export.tfjs=false to skip the TF.js export")


def tfjs_predictor(directory: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Run the graph model in Node.js; a missing Node/npm install is the user's to fix."""
    from pipeline.tfjs_node import run_tfjs_graph_model, tfjs_runner_status

    status = tfjs_runner_status()
    if status is not None:
        raise UserError(f"export: cannot verify the TF.js export: {status} (or set export.tfjs=false)")
    return lambda x: run_tfjs_graph_model(directory, x)


def build_artifacts(model, input_shape: list[int], settings: ExportSettings, workdir: Path) -> list[Artifact]:
    """Write every artifact ``settings`` asks for under ``workdir``; return how to run each."""
    saved_model_dir = workdir / "saved_model"
    write_saved_model(model, input_shape, saved_model_dir)
    artifacts = []
    if settings.saved_model:
        artifacts.append(Artifact("saved_model", "saved_model", saved_model_predictor(saved_model_dir)))
    if settings.tflite:
        write_tflite(saved_model_dir, workdir / "model.tflite")
        artifacts.append(Artifact("tflite", "model.tflite", tflite_predictor(workdir / "model.tflite")))
    if settings.tfjs:
        write_tfjs(saved_model_dir, workdir / "tfjs")
        artifacts.append(Artifact("tfjs", "tfjs", tfjs_predictor(workdir / "tfjs")))
    if not settings.saved_model:
        shutil.rmtree(saved_model_dir)
    return artifacts


def check_artifacts(artifacts: list[Artifact], reference: np.ndarray, x: np.ndarray, workdir: Path) -> dict:
    """Run each artifact on ``x`` and measure it against the Keras outputs ``reference``."""
    report = {}
    for artifact in artifacts:
        started = time.perf_counter()
        outputs = np.asarray(artifact.predict(x), dtype=np.float64).reshape(reference.shape)
        seconds = time.perf_counter() - started
        path = workdir / artifact.relative_path
        report[artifact.name] = {
            "path": artifact.relative_path,
            "max_abs_diff": float(np.max(np.abs(outputs - reference))),
            "argmax_agreement": float(np.mean(outputs.argmax(axis=-1) == reference.argmax(axis=-1))) if reference.shape[-1] > 1
            else float(np.mean((outputs > 0.5) == (reference > 0.5))),
            "size_bytes": directory_size(path) if path.is_dir() else path.stat().st_size,
            "check_seconds": round(seconds, 3),
        }
        logger.info("Checked %-11s max abs diff %.2e over %d inputs (%s bytes)", artifact.name,
                    report[artifact.name]["max_abs_diff"], len(x), f"{report[artifact.name]['size_bytes']:,}")
    return report


def run_export(settings: ExportSettings, processed_dir: Path, models_dir: Path, output_dir: Path) -> dict:
    """Export the trained model, verify every artifact, and move them into ``output_dir``.

    Raises:
        UserError: nothing to export, missing inputs, a failed conversion, or an artifact whose
            outputs differ from the trained model's by more than ``settings.tolerance``.
    """
    processed_dir, output_dir = Path(processed_dir), Path(output_dir)
    if not (settings.saved_model or settings.tflite or settings.tfjs):
        raise UserError("export: every format is off: set at least one of export.saved_model, export.tflite, export.tfjs to true")
    if not (processed_dir / "meta.json").is_file():
        raise UserError(f"export: no preprocessed data at {processed_dir}: run the preprocess stage first")
    meta = read_json(processed_dir / "meta.json")
    model = load_trained_model(models_dir)
    x, _ = load_split(processed_dir, "test")
    x = x[: settings.num_check_inputs].astype(np.float32)
    reference = np.asarray(model.predict(x, verbose=0), dtype=np.float64)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".exports.tmp-", dir=output_dir) as tmp:
        workdir = Path(tmp)
        artifacts = build_artifacts(model, meta["input_shape"], settings, workdir)
        checks = check_artifacts(artifacts, reference, x, workdir)
        failed = {name: check["max_abs_diff"] for name, check in checks.items() if not check["max_abs_diff"] <= settings.tolerance}
        if failed:
            worst = max(failed, key=failed.get)
            raise UserError(f"export: the {worst} export differs from the trained model by {failed[worst]:.3g} "
                            f"(> export.tolerance={settings.tolerance:g}); nothing was exported: check the conversion "
                            "or raise export.tolerance")
        report = {
            "tolerance": settings.tolerance,
            "num_check_inputs": int(len(x)),
            "input_shape": meta["input_shape"],
            "class_names": meta["class_names"],
            "artifacts": checks,
        }
        for artifact in artifacts:
            replace_path(workdir / artifact.relative_path, output_dir / artifact.relative_path)
        for stale in set(ALL_ARTIFACTS) - {artifact.relative_path for artifact in artifacts}:
            remove_path(output_dir / stale)  # a format switched off must not leave an old file behind
        write_json(workdir / "report.json", report)
        replace_path(workdir / "report.json", output_dir / "report.json")
    logger.info("Exported %s to %s (all within %g of the trained model)", ", ".join(checks), output_dir, settings.tolerance)
    return report
