"""Run a TF.js graph model export under Node.js to check a conversion.

The runner (``tools/tfjs_runner/run.js``) uses the WebAssembly backend (``@tensorflow/tfjs-backend-wasm``,
its ``.wasm`` read from ``node_modules``) and runs the input in batches of :data:`TFJS_BATCH_SIZE`; when wasm
fails to initialise it falls back to the pure-JS ``cpu`` backend, which :class:`TfjsRun` and a warning say.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

RUNNER_DIR = Path(__file__).resolve().parents[2] / "tools" / "tfjs_runner"
RUNNER_SCRIPT = RUNNER_DIR / "run.js"
MIN_NODE_MAJOR = 18
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_BACKEND = (
    "wasm"  # 20-40x the pure-JS cpu backend on a 28x28 CNN; "cpu" runs the pure-JS one only
)
TFJS_BATCH_SIZE = 256  # examples per model call on a whole split (the latency stays batch 1)


@dataclass(frozen=True)
class TfjsRun:
    """One run of the Node.js runner: the outputs, how it ran, and the median batch-1 seconds (None: not timed).

    ``fallback`` is why the wasm backend was not used (None when it was, or when ``cpu`` was asked for).
    """

    outputs: np.ndarray
    latency_seconds: float | None
    backend: str
    batch_size: int
    fallback: str | None = None


def _node_major_version(node: str) -> int | None:
    """Return the major version of a Node.js executable.

    Args:
        node: Path of the node executable.

    Returns:
        The major version, or None when it cannot be determined.
    """
    try:
        result = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        )
        return int(result.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def tfjs_runner_status() -> str | None:
    """Tell whether the Node.js TF.js runner can be used.

    Returns:
        None when the runner is usable, otherwise a human-readable reason.
    """
    node = shutil.which("node")
    if node is None:
        return f"node not found on PATH; install Node.js >= {MIN_NODE_MAJOR}"
    major = _node_major_version(node)
    if major is None:
        return f"could not read the version of {node}; install Node.js >= {MIN_NODE_MAJOR}"
    if major < MIN_NODE_MAJOR:
        return f"{node} is Node.js {major}; install Node.js >= {MIN_NODE_MAJOR}"
    if not RUNNER_SCRIPT.is_file():
        return f"{RUNNER_SCRIPT} missing"
    if not (RUNNER_DIR / "node_modules" / "@tensorflow" / "tfjs").is_dir():
        return f"{RUNNER_DIR / 'node_modules'} missing; run `npm ci --prefix {RUNNER_DIR}`"
    return None


def run_tfjs_graph_model(
    model_dir: Path, inputs: np.ndarray, timeout: float = DEFAULT_TIMEOUT_S
) -> np.ndarray:
    """Run a TF.js graph model on a batch of inputs with Node.js (wasm backend, cpu as a fallback).

    Args:
        model_dir: Directory holding model.json and its weight shards.
        inputs: Model input; it is passed to the model as float32.
        timeout: Seconds to wait for the runner before giving up.

    Returns:
        The model output as a float32 array.

    Raises:
        RuntimeError: If the runner is unusable, fails or times out.
    """
    return run_tfjs(model_dir, inputs, 0, timeout).outputs


def run_tfjs_graph_model_timed(
    model_dir: Path, inputs: np.ndarray, latency_repeats: int, timeout: float = DEFAULT_TIMEOUT_S
) -> tuple[np.ndarray, float | None]:
    """:func:`run_tfjs_graph_model`, plus the median seconds of ``latency_repeats`` batch-1 runs."""
    result = run_tfjs(model_dir, inputs, latency_repeats, timeout)
    return result.outputs, result.latency_seconds


def run_tfjs(
    model_dir: Path,
    inputs: np.ndarray,
    latency_repeats: int = 0,
    timeout: float = DEFAULT_TIMEOUT_S,
    backend: str = DEFAULT_BACKEND,
    batch_size: int = TFJS_BATCH_SIZE,
) -> TfjsRun:
    """Run a TF.js graph model on ``inputs`` in Node.js, ``batch_size`` rows per call, on ``backend``.

    The latency (median of ``latency_repeats`` batch-1 runs on the first row) is timed inside Node,
    after a warm-up, so it excludes Node's start-up and the model load; ``latency_repeats=0``: None.
    A wasm backend that fails to initialise falls back to ``cpu``, logged as a warning.

    Example:
        >>> run_tfjs(Path("exports/tfjs"), x, latency_repeats=20).backend
        'wasm'

    Raises:
        RuntimeError: If the runner is unusable, fails or times out.
    """
    status = tfjs_runner_status()
    if status is not None:
        raise RuntimeError(f"TF.js runner unusable: {status}")
    model_dir = Path(model_dir).resolve()
    with tempfile.TemporaryDirectory(prefix="tfjs_runner_") as tmp:
        input_path = Path(tmp) / "input.npy"
        output_path = Path(tmp) / "output.npy"
        np.save(input_path, np.ascontiguousarray(inputs, dtype="<f4"))
        command = [
            "node",
            str(RUNNER_SCRIPT),
            str(model_dir),
            str(input_path),
            str(output_path),
            str(int(latency_repeats)),
            f"--backend={backend}",
            f"--batch-size={int(batch_size)}",
        ]
        logger.debug("Running %s", " ".join(command))
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(
                f"TF.js runner timed out after {timeout:g} s on {model_dir}"
            ) from err
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit code {result.returncode}"
            raise RuntimeError(f"TF.js runner failed on {model_dir}: {reason}")
        described = json.loads(result.stdout.strip().splitlines()[-1])
        if described.get("fallback"):
            logger.warning(
                "TF.js check on the pure-JS cpu backend (slower): the wasm backend failed to initialise: %s; "
                "reinstall the runner (npm ci --prefix %s)",
                described["fallback"],
                RUNNER_DIR,
            )
        return TfjsRun(
            outputs=np.load(output_path),
            latency_seconds=described["latency_seconds_median"],
            backend=described["backend"],
            batch_size=int(described["batch_size"]),
            fallback=described.get("fallback"),
        )
