"""The first epoch of ``model.fit`` with the train step traced once (the optimizer's and metrics'
variables created by :func:`pipeline.training.models.compile_model`) against Keras creating them
inside the first step, which makes TensorFlow trace the step a second time, side by side in one run.

Each sample is a fresh child process that builds and compiles a model with the library
(:func:`~pipeline.training.models.build_model`, :func:`~pipeline.training.models.compile_model`),
then fits one epoch of random in-memory data (``--examples``, batch 32); on the ``lazy`` side
:func:`~pipeline.training.models.build_step_variables` is a no-op, so Keras creates the variables
as it always did. It reports the fit's wall and CPU time (user + system) and how many times the
train step was traced. The sides alternate ``--rounds`` times, so the machine's drift hits both
alike; the table shows the medians and the ratios once / lazy. Nothing is asserted.

Models: ``cnn`` (the seeds' default CNN, 8x8x1 digits, 8 steps per call) and ``backbone``
(MobileNetV2 from random weights at 32x32, one step per call: what the backbone train stage and
its model check pay).

Run it from the repository root (about 4 minutes on 2 CPU cores)::

    python bench/train_step_trace.py
    python bench/train_step_trace.py --models cnn --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from tf_import import child_json  # noqa: E402  (imports no TensorFlow)

MODELS = {
    "cnn": (["model=cnn"], [8, 8, 1]),
    "backbone": (["model=backbone", "model.input_size=[32,32]"], [8, 8, 1]),
}

# Each child prints {"wall": s, "cpu": s, "traces": n} on its last line.
CHILD = """
import json, resource, sys, time
import numpy as np
from pipeline.env import import_tensorflow
tf = import_tensorflow()
from pipeline.training import models
from stages._config import compose_conf, to_settings
overrides, shape, examples, once = json.loads(sys.argv[1])
if not once:
    models.build_step_variables = lambda *args: False
config = to_settings(compose_conf(overrides))
tf.keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.random((examples, *shape), dtype=np.float32)
y = rng.integers(0, 10, examples)
model = models.compile_model(models.build_model(config.model, tuple(shape), 10), config.model, config.train, 10)
usage = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
model.fit(x, y, batch_size=32, epochs=1, verbose=0)
wall = time.perf_counter() - start
done = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "cpu": done.ru_utime + done.ru_stime - usage.ru_utime - usage.ru_stime,
                  "traces": model.train_function.experimental_get_tracing_count()}))
"""
SIDES = {"lazy (Keras, before)": False, "once (compile_model)": True}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="child processes per side and model")
    parser.add_argument(
        "--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS), help="models to fit"
    )
    parser.add_argument("--examples", type=int, default=1440, help="random examples in the epoch")
    return parser.parse_args(argv)


def measure(model: str, once: bool, examples: int) -> dict:
    """One fresh child fitting one epoch of ``model``, its variables created ``once`` up front or not."""
    overrides, shape = MODELS[model]
    return child_json(CHILD, json.dumps([overrides, shape, examples, once]))


def run(args: argparse.Namespace) -> dict[str, dict[str, dict]]:
    """Alternate the sides ``args.rounds`` times per model; print and return the medians."""
    results: dict[str, dict[str, dict]] = {}
    print(f"{'model':9} {'train step':22} {'traces':>6} {'first epoch wall s':>18} {'CPU s':>7}")
    for model in args.models:
        samples: dict[str, list[dict]] = {side: [] for side in SIDES}
        for round_index in range(args.rounds):
            for side, once in SIDES.items():
                samples[side].append(measure(model, once, args.examples))
            print(f"{model}: round {round_index + 1}/{args.rounds} done", file=sys.stderr)
        rows = {
            side: {
                "wall": statistics.median(sample["wall"] for sample in runs),
                "cpu": statistics.median(sample["cpu"] for sample in runs),
                "traces": max(sample["traces"] for sample in runs),
            }
            for side, runs in samples.items()
        }
        for side, row in rows.items():
            print(f"{model:9} {side:22} {row['traces']:6d} {row['wall']:18.2f} {row['cpu']:7.2f}")
        lazy, once = (rows[side] for side in SIDES)
        print(
            f"{model:9} ratio once / lazy: wall {once['wall'] / lazy['wall']:.2f}, "
            f"CPU {once['cpu'] / lazy['cpu']:.2f} (median of {args.rounds} rounds)"
        )
        results[model] = rows
    return results


if __name__ == "__main__":
    run(parse_args())
