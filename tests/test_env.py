"""The Keras flavour switch, its preflight, and the log filters."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers.config import REPO
from pipeline.env import worker_env_vars
from pipeline.training.ray_logs import is_noise


def python(code: str, **env) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_workers_get_the_flavour_switch():
    assert worker_env_vars()["TF_USE_LEGACY_KERAS"] == "1"


# After preflight: what TensorFlow's import left out, then the stand-ins doing their job (a pandas
# input recognised once pandas is imported, TFLite's jax.jit imported when called, predict on
# arrays importing no scipy, a SciPy sparse matrix recognised and fitted once scipy.sparse is
# imported, ImageDataGenerator's rotation through scipy.ndimage).
DEFERRED_CHECK = """
import sys
deferred = sorted(name for name in ("jax", "pandas", "scipy") if name in sys.modules)
from tf_keras.src.engine import data_adapter
from tensorflow.lite.python import lite
import numpy as np
before = data_adapter._is_pandas_series(np.zeros(2))
import pandas
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
model.compile("sgd", "mse")
model.fit(pandas.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}), pandas.Series([1.0, 2.0]), verbose=0)
print("imported by TensorFlow:", deferred, before, data_adapter._is_pandas_series(pandas.Series([1])),
      int(lite._jit(lambda x: x + 1)(1)))
from tf_keras.src.preprocessing import image
from tf_keras.src.engine import training_arrays_v1
sparse_before = training_arrays_v1.issparse(np.zeros(2))
model.predict(np.zeros((2, 2)), verbose=0)  # the data adapter asks whether its input is sparse
scipy_after_predict = "scipy" in sys.modules
rotated = image.apply_affine_transform(np.arange(16.0).reshape(1, 4, 4), theta=90, order=0)
import scipy.sparse
sparse_fit = model.fit(scipy.sparse.csr_matrix(np.eye(2)), np.ones(2), verbose=0).history["loss"]
print("scipy stand-ins:", sparse_before, scipy_after_predict,
      training_arrays_v1.issparse(scipy.sparse.eye(2)), data_adapter._is_scipy_sparse(
      scipy.sparse.eye(2)), len(sparse_fit),
      rotated[0].tolist() == np.rot90(np.arange(16.0).reshape(4, 4)).tolist())
# The collector: back on after the import, TensorFlow's objects in its permanent generation (out
# of every later collection), and a reference cycle made after the import still collected.
import gc, weakref
class Node: pass
node = Node(); node.self = node; alive = weakref.ref(node); del node
gc.collect()
print("collector:", "on" if gc.isenabled() else "off", "TensorFlow frozen",
      gc.get_freeze_count() > 100_000, "cycle collected", alive() is None)
"""


def test_preflight_names_the_flavour_and_import_is_quiet_and_lean():
    """One line names the flavour, no native noise; TensorFlow's import leaves out jax, pandas and
    scipy (pipeline.env.DEFERRED_IMPORTS) and what wanted them still works; the garbage collector
    is on again after it, with TensorFlow's objects frozen."""
    result = python(
        "import logging; logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from pipeline.env import preflight; preflight()\n" + DEFERRED_CHECK
    )
    assert result.returncode == 0, result.stderr
    assert (
        "Keras flavour: tf-keras 2.19.0 (legacy Keras 2, TF_USE_LEGACY_KERAS=1) on TensorFlow 2.19.0"
        in result.stderr
    )
    assert "cuDNN" not in result.stderr and "computation placer" not in result.stderr
    assert "imported by TensorFlow: [] False True 2" in result.stdout, result.stdout + result.stderr
    assert "scipy stand-ins: False False True True 1 True" in result.stdout, (
        result.stdout + result.stderr
    )
    assert "collector: on TensorFlow frozen True cycle collected True" in result.stdout, (
        result.stdout + result.stderr
    )


def test_preflight_fails_clearly_when_tensorflow_came_first():
    # tf.keras resolves its flavour on first use: touching it before `import pipeline` pins Keras 3.
    result = python(
        "import tensorflow as tf\ntf.keras.layers.Dense\nfrom pipeline.env import preflight\n"
        "from pipeline.errors import UserError\n"
        "try:\n    preflight()\nexcept UserError as e:\n    print(e)\n    raise SystemExit(3)"
    )
    assert result.returncode == 3, result.stderr
    assert "needs legacy Keras 2 (tf-keras)" in result.stdout
    assert "TensorFlow was imported before pipeline set it" in result.stdout


def test_quiet_native_stderr_hides_fd2_but_not_exceptions():
    result = python(
        "import os\nfrom pipeline.env import quiet_native_stderr\n"
        "with quiet_native_stderr():\n    os.write(2, b'native noise\\n')\n"
        "os.write(2, b'after\\n')\n"
        "with quiet_native_stderr():\n    raise ValueError('kept')"
    )
    assert "native noise" not in result.stderr
    assert "after" in result.stderr and "ValueError: kept" in result.stderr


def test_worker_noise_filter_keeps_progress_and_errors():
    noise = [
        "E0000 00:00:1795394998.267133   15198 cuda_dnn.cc:8579] Unable to register cuDNN factory",
        "W0000 00:00:1795394998.352166   15198 computation_placer.cc:177] computation placer already registered.",
        "[2026-11-23 01:07:36,310 I 32674 32674] logging.cc:303: Set ray log level from environment variable",
        "Checkpoint successfully created at: Checkpoint(filesystem=local, path=/tmp/x)",
        "Reporting training result 3: TrainingReport(...)",
    ]
    kept = [
        "epoch 1/15  loss 2.2240  accuracy 0.2251",
        "Traceback (most recent call last):",
        "RuntimeError: Collective ops must be configured at program startup",
    ]
    assert all(is_noise(line) for line in noise)
    assert not any(is_noise(line) for line in kept)


def test_the_train_driver_never_imports_tensorflow(tmp_path):
    """The train stage's driver hands TensorFlow to the Ray workers: preflight, the trainer's backend (also unpickled by
    Ray's controller) and the HParams writer import none of it (each import cost a run ~5 s before its workers started)."""
    result = python(
        "import sys, pickle, pathlib\n"
        "from pipeline.env import preflight\n"
        "from helpers.config import compose\n"
        "from pipeline.training.hparams import log_hparams, read_hparams\n"
        "from pipeline.training.ray_backend import TFConfigBackend\n"
        "import pipeline.training.train\n"
        "from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer\n"
        "print(preflight(import_tf=False))\n"
        "assert pickle.loads(pickle.dumps(TFConfigBackend())).backend_cls.__name__ == '_TFConfigBackend'\n"
        "from pipeline.settings import TrainRequest\n"
        f"log_hparams(pathlib.Path('{tmp_path}'), TrainRequest.from_config(compose()), {{'epochs': 2, 'loss': 0.5}})\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        f"print(read_hparams(pathlib.Path('{tmp_path}'))[1])\n",
        PYTHONPATH=f"{REPO}:{REPO / 'tests'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "tf-keras 2.19.0 (legacy Keras 2, TF_USE_LEGACY_KERAS=1) on TensorFlow 2.19.0"
        in result.stdout
    )
    assert "{'final/loss': 0.5}" in result.stdout


def test_thread_spinning_goes_off_before_the_context_exists_and_not_after():
    result = python(
        "from pipeline.env import import_tensorflow, threads_without_spinning\n"
        "tf = import_tensorflow()\n"
        "from tensorflow.python.eager import context\n"
        "tf.config.threading.set_intra_op_parallelism_threads(2)\n"  # a setting made before stays
        "first = threads_without_spinning()\n"
        "assert int(tf.reduce_sum(tf.ones([3]))) == 3\n"
        "config = context.context().config\n"
        "print(first, config.experimental.disable_thread_spinning, "
        "config.intra_op_parallelism_threads, threads_without_spinning())"
    )
    assert result.stdout.split() == ["True", "True", "2", "False"], result.stderr[-2000:]


def test_only_workers_sharing_a_node_stop_spinning():
    code = (
        "from pipeline.env import import_tensorflow\ntf = import_tensorflow()\n"
        "from tensorflow.python.eager import context\n"
        "from pipeline.training.worker import distribution_strategy\n"
        "strategy = distribution_strategy(2, {on_node})\n"
        "print(isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), "
        "context.context().config.experimental.disable_thread_spinning)"
    )
    shared, alone = (python(code.format(on_node=n)).stdout.split() for n in (2, 1))
    assert shared == ["True", "True"] and alone == ["True", "False"]
