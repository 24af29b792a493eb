"""The TF.js graph model: the official ``tensorflowjs_converter`` on the SavedModel, run in Node.js.

The converter starts from the SavedModel's ``probabilities`` signature (raw inputs, preprocessing
inside; it mishandles ``.keras`` files, tfjs#8266). ``export.tfjs_quantization`` optionally stores
the weights as float16 or uint8 (affine) to shrink the download; the graph still computes in
float32. The class names ride along in ``model.json``'s ``userDefinedMetadata.labels``. The export is
checked in Node.js (:mod:`pipeline.export.tfjs_node`: the wasm backend, batches of 256).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.export.saved_model import PROBABILITIES_SIGNATURE

logger = logging.getLogger(__name__)

CONVERTER_TIMEOUT_S = 600


def converter_executable() -> str:
    """``tensorflowjs_converter`` installed next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).with_name("tensorflowjs_converter")
    found = str(beside) if beside.exists() else shutil.which("tensorflowjs_converter")
    if not found:
        raise UserError(
            "export: tensorflowjs_converter not found: install the project (pip install -r requirements.lock -e .) "
            "or set export.tfjs=false"
        )
    return found


def write_tfjs(
    saved_model_dir: Path,
    directory: Path,
    class_names: list[str],
    quantization: str = "none",
    signature: str = PROBABILITIES_SIGNATURE,
) -> None:
    """Convert the SavedModel to a TF.js graph model with the official converter.

    Args:
        saved_model_dir: A SavedModel with the ``probabilities`` signature.
        directory: Output directory (``model.json`` + weight shards).
        class_names: Stored as ``userDefinedMetadata.labels`` in ``model.json``.
        quantization: ``none``, ``float16`` or ``uint8`` weight storage.
        signature: The SavedModel signature to convert (``predictions`` for a regression model).
    """
    with tempfile.TemporaryDirectory(prefix="tfjs-metadata-") as tmp:
        labels = Path(tmp) / "labels.json"
        labels.write_text(json.dumps([str(name) for name in class_names]))
        command = [
            converter_executable(),
            "--input_format=tf_saved_model",
            "--output_format=tfjs_graph_model",
            f"--signature_name={signature}",
            "--saved_model_tags=serve",
            f"--metadata=labels:{labels}",
        ]
        if quantization != "none":
            command.append(f"--quantize_{quantization}=*")
        command += [str(saved_model_dir), str(directory)]
        logger.debug("Running %s", " ".join(command))
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=CONVERTER_TIMEOUT_S, check=False
        )
    if result.returncode != 0 or not (directory / "model.json").is_file():
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        raise UserError(
            f"export: tensorflowjs_converter failed: {lines[-1] if lines else result.returncode}: "
            "set export.tfjs=false to skip the TF.js export"
        )


def tfjs_runner(
    directory: Path,
) -> Callable[[np.ndarray, int], tuple[np.ndarray, float | None, dict]]:
    """Run the graph model in Node.js: ``(x, latency_repeats) -> (outputs, median batch-1 seconds, runtime)``.

    ``runtime`` is how the whole of ``x`` ran: the backend (``wasm``, or ``cpu`` with the
    ``fallback`` reason when wasm failed to initialise) and the batch size
    (:func:`pipeline.export.tfjs_node.run_tfjs`).

    Raises:
        UserError: Node.js or the runner's npm install is missing (the user's to fix).
    """
    from pipeline.export.tfjs_node import run_tfjs, tfjs_runner_status

    status = tfjs_runner_status()
    if status is not None:
        raise UserError(
            f"export: cannot verify the TF.js export: {status} (or set export.tfjs=false)"
        )

    def run(x: np.ndarray, latency_repeats: int) -> tuple[np.ndarray, float | None, dict]:
        try:
            result = run_tfjs(directory, x, latency_repeats)
        except RuntimeError as error:
            raise UserError(
                f"export: {error}: check the Node.js install (README 'Deploy') or set export.tfjs=false"
            ) from None
        runtime = {"backend": result.backend, "batch_size": result.batch_size}
        if result.fallback:
            runtime["fallback"] = result.fallback
        return result.outputs, result.latency_seconds, runtime

    return run
