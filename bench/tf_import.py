"""What importing TensorFlow costs a process: a plain ``import tensorflow`` against the pipeline's
(:func:`pipeline.env.import_tensorflow`, which leaves out the libraries in
:data:`pipeline.env.DEFERRED_IMPORTS`), side by side in one run.

Every process the pipeline starts pays this once: each stage that loads a model, the local
training worker, each Ray Train worker, the model check. Each side runs in a fresh child process
(``--rounds`` times, alternating, so the machine's drift hits both alike) that imports TensorFlow
with the Keras flavour switch set and reports its wall time and its CPU time (user + system);
the table shows the medians and the ratios pipeline / plain. Nothing is asserted.

``--work`` adds what a stage does after the import (a small CNN built, fitted for 3 epochs,
evaluated, saved and reloaded, exported as a SavedModel and converted to TFLite, as train,
evaluate and export do) and times it apart: the
pipeline's import leaves the ~400k objects it created to the garbage collector's permanent
generation (:func:`pipeline.env._collector_spared`), so the full collections the work triggers
no longer walk them.

Run it from the repository root (about a minute on 2 CPU cores; 3 with ``--work``)::

    python bench/tf_import.py --rounds 5
    python bench/tf_import.py --rounds 5 --work
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.env import DEFERRED_IMPORTS  # noqa: E402  (imports no TensorFlow)

# Each child prints {"wall": s, "cpu": s, "modules": [...]} on its last line.
CHILD = """
import json, os, resource, sys, time
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
start = time.perf_counter()
if {pipeline!r}:
    from pipeline.env import import_tensorflow
    import_tensorflow()
else:
    import tensorflow
usage = resource.getrusage(resource.RUSAGE_SELF)
wall = time.perf_counter() - start
modules = [name for name in {watched!r} if name in sys.modules]
work_wall = work_cpu = 0.0
if {work!r}:
    import tempfile
    import numpy as np
    import tensorflow as tf
    tf.keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((2000, 28, 28, 1), dtype=np.float32)
    y = (x.mean(axis=(1, 2, 3)) * 10).astype(np.int64) % 10
    model = tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)), tf.keras.layers.Conv2D(16, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(), tf.keras.layers.Conv2D(32, 3, activation="relu"),
        tf.keras.layers.Flatten(), tf.keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=3, validation_split=0.1, verbose=0)
    model.evaluate(x, y, verbose=0)
    with tempfile.TemporaryDirectory() as scratch:
        model.save(scratch + "/model.keras")
        tf.keras.models.load_model(scratch + "/model.keras").predict(x, verbose=0)
        tf.saved_model.save(model, scratch + "/saved_model")
        tf.lite.TFLiteConverter.from_saved_model(scratch + "/saved_model").convert()
    done = resource.getrusage(resource.RUSAGE_SELF)
    work_wall = time.perf_counter() - start - wall
    work_cpu = done.ru_utime + done.ru_stime - usage.ru_utime - usage.ru_stime
print(json.dumps({{"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
                  "work_wall": work_wall, "work_cpu": work_cpu, "modules": modules}}))
"""
SIDES = {"plain import tensorflow": False, "pipeline.env.import_tensorflow": True}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="child processes per side")
    parser.add_argument(
        "--work",
        action="store_true",
        help="after the import, fit, evaluate, save and reload a small CNN, timed apart",
    )
    return parser.parse_args(argv)


def child_json(code: str, *args: str) -> dict:
    """``python -c code args`` in a fresh process at the repository root (on its ``PYTHONPATH``):
    the JSON object the last line of its output holds."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(pipeline: bool, work: bool = False) -> dict:
    """One fresh child importing TensorFlow one way (then doing the ``--work``, if asked)."""
    return child_json(CHILD.format(pipeline=pipeline, work=work, watched=DEFERRED_IMPORTS))


def run(args: argparse.Namespace) -> dict[str, dict]:
    """Alternate the sides ``args.rounds`` times; print and return each side's medians."""
    samples: dict[str, list[dict]] = {side: [] for side in SIDES}
    for round_index in range(args.rounds):
        for side, pipeline in SIDES.items():
            samples[side].append(measure(pipeline, args.work))
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    timed = ("wall", "cpu", "work_wall", "work_cpu") if args.work else ("wall", "cpu")
    rows = {
        side: {
            **{key: statistics.median(sample[key] for sample in runs) for key in timed},
            "modules": runs[-1]["modules"],
        }
        for side, runs in samples.items()
    }
    work_header = f" {'work wall s':>11} {'work CPU s':>10}" if args.work else ""
    print(
        f"{'import':34} {'wall s':>7} {'CPU s':>7}{work_header}  "
        f"of {', '.join(DEFERRED_IMPORTS)}: imported"
    )
    for side, row in rows.items():
        modules = ", ".join(row["modules"]) or "none"
        work = f" {row['work_wall']:11.2f} {row['work_cpu']:10.2f}" if args.work else ""
        print(f"{side:34} {row['wall']:7.2f} {row['cpu']:7.2f}{work}  {modules}")
    plain, ours = (rows[side] for side in SIDES)
    print(
        f"ratio pipeline / plain: wall {ours['wall'] / plain['wall']:.2f}, "
        f"CPU {ours['cpu'] / plain['cpu']:.2f} (median of {args.rounds} rounds)"
    )
    if args.work:
        print(
            f"ratio pipeline / plain, the work after the import: wall "
            f"{ours['work_wall'] / plain['work_wall']:.2f}, "
            f"CPU {ours['work_cpu'] / plain['work_cpu']:.2f}"
        )
    return rows


if __name__ == "__main__":
    run(parse_args())
