"""Process environment: the Keras flavour switch and log filtering, applied before TensorFlow loads.

Keras 3 cannot train under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), so every
process -- the driver and each Ray worker -- runs legacy Keras 2 (``tf-keras``) selected by
``TF_USE_LEGACY_KERAS=1``. The variable only works if it is set before TensorFlow's first import,
which is why ``pipeline/__init__.py`` calls :func:`configure_process_env` and Ray workers receive
:func:`worker_env_vars` through their ``runtime_env``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.abc
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from pipeline.errors import UserError

logger = logging.getLogger(__name__)

KERAS_FLAVOUR_ENV = {"TF_USE_LEGACY_KERAS": "1"}
# Defaults only (setdefault): a user who exports a louder level keeps it.
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # drop TF C++ start-up noise (CUDA factory registration, oneDNN)
    "GRPC_VERBOSITY": "ERROR",
    "TFDF_DISABLE_WELCOME_MESSAGE": "1",  # the TF.js converter imports TF Decision Forests, which greets on stdout
    "RAY_DEDUP_LOGS": "1",
    # Ray's dedup drops a line whose digit-free words match another worker's line; keep each
    # worker's "worker 1/2 on node ... pid ..." announcement (pipeline/training/worker.py) visible.
    "RAY_DEDUP_LOGS_ALLOW_REGEX": r"worker \d+/\d+ on node ",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray's C++ processes log start-up chatter at info level, and when no dashboard agent runs
    # (a minimal Ray install, or a cluster started without it) a "Failed to establish connection to
    # the metrics exporter agent" error; neither RAY_enable_metrics_collection=0 nor
    # RAY_enable_open_telemetry=0 stops that one (measured with ray[train] alone).
    "RAY_BACKEND_LOG_LEVEL": "fatal",
}
# What `-v` turns back on (stages/_common.py).
VERBOSE_OVERRIDES = {"TF_CPP_MIN_LOG_LEVEL": "0", "RAY_BACKEND_LOG_LEVEL": "info"}
# Defaults that make short runs fast: Ray Train V2's controller polls its workers every 2 s and
# takes one report per worker per poll (each worker's result queue holds one), so per-epoch reports
# queue up behind short epochs and the final report waits for them all. At 0.1 s: 60 reports 0.3 s
# apart, final report 12.4 s -> 0.0 s of waiting, run 41.6 -> 28.5 s, machine CPU 32.5 -> 29.5 s
# (shorter idle daemons outweigh the polls; docs/benchmarks.md#the-end-of-a-multi-worker-run).
RAY_TRAIN_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",  # Ray's future default; silences its FutureWarning
}
VERBOSE_ENV = "PIPELINE_VERBOSE"


def configure_process_env() -> None:
    """Set the Keras flavour and quiet defaults in ``os.environ`` (idempotent)."""
    os.environ.update(KERAS_FLAVOUR_ENV)
    for key, value in {**QUIET_ENV, **RAY_TRAIN_ENV}.items():
        os.environ.setdefault(key, value)
    if not is_verbose():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", module="tensorflow")
        warnings.filterwarnings("ignore", module="keras")
    if "tensorflow" not in sys.modules and not any(
        isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def is_verbose() -> bool:
    """Whether the user asked for full library logs (``-v`` on a stage, or PIPELINE_VERBOSE=1)."""
    return os.environ.get(VERBOSE_ENV, "0") == "1"


def worker_env_vars() -> dict[str, str]:
    """Environment for Ray workers: the flavour switch plus the same log filters as the driver."""
    keys = [*KERAS_FLAVOUR_ENV, *QUIET_ENV, *RAY_TRAIN_ENV, VERBOSE_ENV]
    return {key: os.environ[key] for key in keys if key in os.environ}


def quiet_tensorflow_loggers() -> None:
    """Silence absl/TensorFlow Python loggers unless verbose."""
    if is_verbose():
        return
    for name in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # absl comes with TensorFlow; nothing to quiet without it
        pass


def threads_without_spinning() -> bool:
    """Make TensorFlow's thread pools block instead of spinning when they run out of work.

    Idle inter-op and intra-op threads spin on their queues before they sleep by default
    (``ConfigProto.experimental.disable_thread_spinning``). Under MultiWorkerMirroredStrategy every
    step waits on the all-reduce with the other workers, so that spinning burns the cores the other
    workers on the node need: 2 workers sharing 2 cores, epochs 0.69 -> 0.53 s idle, fits 25 -> 14 s
    with a third process busy (docs/benchmarks.md#multi-worker-thread-spinning). A process alone
    on its cores should keep spinning (a compute-heavy model slows down without). TensorFlow has no
    public setter, and the pools are built with its eager context: this must run before the first
    TensorFlow op. Returns False (nothing changed) once the context exists.
    """
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    current = context.context()
    if current._context_handle is not None:  # pools already built: too late to change them
        return False
    config = config_pb2.ConfigProto()
    if current._config is not None:
        config.CopyFrom(current._config)
    config.experimental.disable_thread_spinning = True
    current._config = config
    return True


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send what native code writes to fd 2 to /dev/null for the block, unless verbose.

    TensorFlow's C++ start-up notes and the TFLite converter's MLIR notes bypass
    ``TF_CPP_MIN_LOG_LEVEL`` once any absl-linked library (Ray's) is loaded, so the only filter
    is the file descriptor. Python exceptions raised inside the block still propagate.
    """
    if is_verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# Libraries TensorFlow's import pulls in only in case a user wants them: tensorflow.lite imports
# jax for TFLiteConverter.experimental_from_jax, tf_keras's data adapter imports pandas to
# recognise pandas inputs, tf_keras's ImageDataGenerator imports scipy.linalg and scipy.ndimage for
# its affine transforms, the v1 training loops and the data adapters (on every fit and predict)
# scipy.sparse to recognise sparse inputs. Together
# ~3 s of CPU in every process importing TensorFlow (docs/benchmarks.md#tensorflows-import).
DEFERRED_IMPORTS = ("jax", "pandas", "scipy")


class _NoInstances:
    """A type nothing is an instance of."""


class _PandasOnceImported:
    """tf_keras's data adapter's ``pd``: pandas's own attributes once anything in the process
    imported pandas, and types nothing is an instance of before that (an object can only be a
    pandas Series or DataFrame if pandas was imported), so its checks give the same answers
    without importing pandas."""

    def __getattr__(self, name: str):
        pandas = sys.modules.get("pandas")
        return _NoInstances if pandas is None else getattr(pandas, name)


class _ImportedOnFirstUse:
    """A module's stand-in: the module itself is imported when an attribute is first read."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self._name), attribute)


def _scipy_issparse(value) -> bool:
    """``scipy.sparse.issparse``: False until anything in the process imported scipy.sparse (a value
    can only be a SciPy sparse matrix if it was), scipy's own answer after."""
    sparse = sys.modules.get("scipy.sparse")
    return False if sparse is None else sparse.issparse(value)


def _jax_jit(*args, **kwargs):
    """``jax.jit``, imported when first called (TFLite's converter from JAX)."""
    from jax import jit

    return jit(*args, **kwargs)


# Where TensorFlow keeps what it imported from the deferred libraries: (module, name, stand-in).
_DEFERRED_STAND_INS = (
    ("tensorflow.lite.python.util", "_jit", _jax_jit),
    ("tensorflow.lite.python.lite", "_jit", _jax_jit),
    ("tf_keras.src.engine.data_adapter", "pd", _PandasOnceImported()),
    ("tensorflow.python.keras.engine.data_adapter", "pd", _PandasOnceImported()),
    ("tf_keras.src.preprocessing.image", "scipy", _ImportedOnFirstUse("scipy")),
    ("tf_keras.src.preprocessing.image", "linalg", _ImportedOnFirstUse("scipy.linalg")),
    ("tf_keras.src.preprocessing.image", "ndimage", _ImportedOnFirstUse("scipy.ndimage")),
    *(
        (module, "issparse", _scipy_issparse)
        for module in (
            "tf_keras.src.engine.training_v1",
            "tf_keras.src.engine.training_arrays_v1",
            "tensorflow.python.keras.engine.training_v1",
            "tensorflow.python.keras.engine.training_arrays_v1",
        )
    ),
)

# Functions TensorFlow calls on every fit/evaluate/predict input that import a deferred library
# just to ask whether a value is one of its types; replaced by ones that answer without importing.
_DEFERRED_PROBES = tuple(
    (module, "_is_scipy_sparse", _scipy_issparse)
    for module in (
        "tf_keras.src.engine.data_adapter",
        "tensorflow.python.keras.engine.data_adapter",
    )
)


@contextlib.contextmanager
def _optional_imports_deferred() -> Iterator[None]:
    """Import TensorFlow without :data:`DEFERRED_IMPORTS` (unless already imported), then give
    the modules that tried to import them stand-ins that import them on first use, so nothing
    TensorFlow offers is lost; and keep the garbage collector off TensorFlow's objects
    (:func:`_collector_spared`)."""
    deferred = [name for name in DEFERRED_IMPORTS if name not in sys.modules]
    for name in deferred:
        sys.modules[name] = None  # `import name` raises ImportError, which TensorFlow expects
    try:
        with _collector_spared():
            yield
    finally:
        for name in deferred:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
        for module_name, attribute, stand_in in _DEFERRED_STAND_INS:
            module = sys.modules.get(module_name)
            # None (`except ImportError: name = None`) or never bound (`except ImportError: pass`)
            if module is not None and getattr(module, attribute, None) is None:
                setattr(module, attribute, stand_in)
        for module_name, attribute, probe in _DEFERRED_PROBES:
            module = sys.modules.get(module_name)
            if module is not None and hasattr(module, attribute):
                setattr(module, attribute, probe)


@contextlib.contextmanager
def _collector_spared() -> Iterator[None]:
    """Run TensorFlow's import with the cyclic garbage collector off, then move every object alive
    after it (TensorFlow's and Keras's modules, functions, classes and registries: ~420,000) to the
    collector's permanent generation (:func:`gc.freeze`).

    They live as long as the process, yet every full collection walked them all: during the
    import itself, and again whenever training, evaluation or export had allocated enough to
    trigger one. Frozen objects are still freed by reference counting; only a reference cycle
    among them would outlive its use. ``dvc repro`` of the default pipeline: 13% less CPU
    (docs/benchmarks.md#tensorflows-import).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs TensorFlow's first import in this process under :func:`quiet_native_stderr`, wherever
    that import happens (a stage, a Ray worker, a library TensorFlow pulls in), so no code path can
    let its C++ start-up notes through (``Unable to register cuDNN factory``, ``All log messages
    before absl::InitializeLog()``, ``computation placer already registered``). ``-v`` lets them
    through: the check happens at import time."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # one import to wrap; also keeps find_spec below from recursing
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module) -> None:
            with quiet_native_stderr(), _optional_imports_deferred():
                exec_module(module)

        spec.loader.exec_module = quiet_exec_module
        return spec


def import_tensorflow():
    """Import TensorFlow without its C++ start-up noise (see :func:`quiet_native_stderr`)."""
    if "tensorflow" not in sys.modules:
        with quiet_native_stderr(), _optional_imports_deferred():
            import tensorflow  # noqa: F401
    return sys.modules["tensorflow"]


def _installed_version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def preflight(import_tf: bool = True) -> str:
    """Import TensorFlow and check it runs the Keras flavour this pipeline needs.

    ``import_tf=False`` (a driver that only hands work to Ray workers, which import TensorFlow
    themselves) checks the installed distributions instead and imports nothing.

    Returns:
        A short description of the flavour, e.g. ``"tf-keras 2.19.0 (legacy Keras 2) on TF 2.19.0"``.

    Raises:
        UserError: TensorFlow was imported before the switch was set, or tf-keras is missing.
    """
    already_imported = "tensorflow" in sys.modules
    configure_process_env()
    if not import_tf and not already_imported:
        versions = {name: _installed_version(name) for name in ("tensorflow", "tf-keras")}
        if "not installed" in versions.values():
            missing = " and ".join(
                name for name, version in versions.items() if version == "not installed"
            )
            raise UserError(
                f"Keras flavour: {missing} not installed: this pipeline needs legacy Keras 2 (tf-keras) on "
                "TensorFlow; install the pinned requirements (pip install -r requirements.lock)"
            )
        flavour = f"tf-keras {versions['tf-keras']} (legacy Keras 2, TF_USE_LEGACY_KERAS=1) on TensorFlow {versions['tensorflow']}"
        logger.info("Keras flavour: %s", flavour)
        return flavour
    tf = import_tensorflow()

    quiet_tensorflow_loggers()
    keras_module = type(tf.keras.layers.Layer()).__module__
    keras_version = (
        _installed_version("tf-keras")
        if keras_module.startswith("tf_keras")
        else _installed_version("keras")
    )
    if not keras_module.startswith("tf_keras"):
        when = (
            "TensorFlow was imported before pipeline set it"
            if already_imported
            else "tf-keras is missing"
        )
        raise UserError(
            f"Keras flavour: tf.keras is Keras {keras_version}, but this pipeline needs legacy Keras 2 "
            f"(tf-keras) with TF_USE_LEGACY_KERAS=1 ({when}); import pipeline before tensorflow and "
            f"install the pinned tf-keras=={tf.__version__}"
        )
    flavour = f"tf-keras {keras_version} (legacy Keras 2, TF_USE_LEGACY_KERAS=1) on TensorFlow {tf.__version__}"
    logger.info("Keras flavour: %s", flavour)
    return flavour
