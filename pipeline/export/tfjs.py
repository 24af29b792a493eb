"""The TF.js graph model: the official converter (``tensorflowjs_converter``'s) on the SavedModel, run in Node.js.

The converter starts from the SavedModel's ``probabilities`` signature (raw inputs, preprocessing
inside; it mishandles ``.keras`` files, tfjs#8266). ``export.tfjs_quantization`` optionally stores
the weights as float16 or uint8 (affine) to shrink the download; the graph still computes in
float32. The class names ride along in ``model.json``'s ``userDefinedMetadata.labels``. The export is
checked in Node.js (:mod:`pipeline.export.tfjs_node`: the wasm backend, batches of 256).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.export.saved_model import PROBABILITIES_SIGNATURE

logger = logging.getLogger(__name__)

WEIGHT_SHARD_BYTES = 4 * 1024 * 1024  # the converter's command-line default


def write_tfjs(
    saved_model_dir: Path,
    directory: Path,
    class_names: list[str],
    quantization: str = "none",
    signature: str = PROBABILITIES_SIGNATURE,
) -> None:
    """Convert the SavedModel to a TF.js graph model with the official converter, in this process.

    The same call ``tensorflowjs_converter --input_format=tf_saved_model
    --output_format=tfjs_graph_model`` makes, without the converter's own interpreter start and
    TensorFlow import (~5 s per export); its console output goes to the debug log.

    Args:
        saved_model_dir: A SavedModel with the ``probabilities`` signature.
        directory: Output directory (``model.json`` + weight shards).
        class_names: Stored as ``userDefinedMetadata.labels`` in ``model.json``.
        quantization: ``none``, ``float16`` or ``uint8`` weight storage.
        signature: The SavedModel signature to convert (``predictions`` for a regression model).

    Raises:
        UserError: the converter refused the model (its first line, and how to skip TF.js).
    """
    from pipeline.env import is_verbose, quiet_native_stderr

    console = io.StringIO()
    try:
        with contextlib.ExitStack() as quiet:
            if not is_verbose():
                quiet.enter_context(quiet_native_stderr())
                quiet.enter_context(contextlib.redirect_stdout(console))
                quiet.enter_context(contextlib.redirect_stderr(console))
            from tensorflowjs.converters import tf_saved_model_conversion_v2

            from pipeline.export.tfjs_fold import fast_batch_norm_folding

            quiet.enter_context(fast_batch_norm_folding())  # the converter's, vectorised
            tf_saved_model_conversion_v2.convert_tf_saved_model(
                str(saved_model_dir),
                str(directory),
                signature_def=signature,
                saved_model_tags="serve",
                quantization_dtype_map={quantization: ["*"]} if quantization != "none" else None,
                weight_shard_size_bytes=WEIGHT_SHARD_BYTES,
                metadata={"labels": [str(name) for name in class_names]},
            )
    except Exception as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise UserError(
            f"export: the TF.js converter failed: {lines[0] if lines else type(error).__name__}: "
            "set export.tfjs=false to skip the TF.js export"
        ) from None
    finally:
        if console.getvalue().strip():
            logger.debug("tensorflowjs converter: %s", console.getvalue().strip())
    if not (directory / "model.json").is_file():
        raise UserError(
            f"export: the TF.js converter wrote no model.json in {directory}: "
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
