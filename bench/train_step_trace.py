"""The first epoch of ``model.fit``, two ways of building the train step side by side in one run.

``--compare trace`` (the default): the train step traced once (the optimizer's and metrics'
variables created by :func:`pipeline.training.models.compile_model`) against Keras creating them
inside the first step, which makes TensorFlow trace the step a second time; on the ``lazy`` side
:func:`~pipeline.training.models.build_step_variables` is a no-op, so Keras creates the variables
as it always did.

``--compare adam``: Adam's fused update (:mod:`pipeline.training.fused_adam`, one
``ResourceApplyAdam`` op per variable) against Keras's own ``Adam.update_step`` (about twenty ops
per variable to trace); on the ``Keras Adam`` side :func:`~pipeline.training.fused_adam.fuse_adam`
is a no-op.

Each sample is a fresh child process that builds and compiles a model with the library
(:func:`~pipeline.training.models.build_model`, :func:`~pipeline.training.models.compile_model`),
then fits one epoch of random in-memory data (``--examples``, batch 32). It reports the fit's wall
and CPU time (user + system) and how many times the train step was traced. The sides alternate
``--rounds`` times, so the machine's drift hits both alike; the table shows the medians and the
ratio of the second side to the first. Nothing is asserted.

Models: ``cnn`` (the seeds' default CNN, 8x8x1 digits, 8 steps per call) and ``backbone``
(MobileNetV2 from random weights at 32x32, one step per call: what the backbone train stage and
its model check pay).

Run it from the repository root (about 4 minutes on 2 CPU cores per comparison)::

    python bench/train_step_trace.py
    python bench/train_step_trace.py --compare adam --models backbone --rounds 3
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

# Each child prints {"wall": s, "cpu": s, "traces": n, "fused": bool} on its last line.
CHILD = """
import json, resource, sys, time
import numpy as np
from pipeline.env import import_tensorflow
tf = import_tensorflow()
from pipeline.training import models
from stages._config import compose_conf, to_settings
overrides, shape, examples, side = json.loads(sys.argv[1])
if not side["once"]:
    models.build_step_variables = lambda *args: False
if not side["fused"]:
    from pipeline.training import fused_adam
    fused_adam.fuse_adam = lambda optimizer: optimizer
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
                  "traces": model.train_function.experimental_get_tracing_count(),
                  "fused": getattr(model.optimizer, "_fused_adam", False)}))
"""
# --compare: the two sides, the first the baseline
COMPARISONS = {
    "trace": {
        "lazy (Keras, before)": {"once": False, "fused": True},
        "once (compile_model)": {"once": True, "fused": True},
    },
    "adam": {
        "Keras Adam (before)": {"once": True, "fused": False},
        "fused Adam": {"once": True, "fused": True},
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="child processes per side and model")
    parser.add_argument(
        "--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS), help="models to fit"
    )
    parser.add_argument("--examples", type=int, default=1440, help="random examples in the epoch")
    parser.add_argument(
        "--compare", choices=sorted(COMPARISONS), default="trace", help="what the sides differ in"
    )
    return parser.parse_args(argv)


def measure(model: str, side: dict, examples: int) -> dict:
    """One fresh child fitting one epoch of ``model`` built as ``side`` says: the step's variables
    created ``once`` up front or not, Adam ``fused`` or Keras's."""
    overrides, shape = MODELS[model]
    return child_json(CHILD, json.dumps([overrides, shape, examples, side]))


def run(args: argparse.Namespace) -> dict[str, dict[str, dict]]:
    """Alternate the sides ``args.rounds`` times per model; print and return the medians."""
    results: dict[str, dict[str, dict]] = {}
    sides = COMPARISONS[args.compare]
    print(f"{'model':9} {'train step':22} {'traces':>6} {'first epoch wall s':>18} {'CPU s':>7}")
    for model in args.models:
        samples: dict[str, list[dict]] = {side: [] for side in sides}
        for round_index in range(args.rounds):
            for side, built in sides.items():
                samples[side].append(measure(model, built, args.examples))
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
        (base_name, base), (name, new) = rows.items()
        print(
            f"{model:9} ratio {name.split()[0]} / {base_name.split()[0]}: "
            f"wall {new['wall'] / base['wall']:.2f}, "
            f"CPU {new['cpu'] / base['cpu']:.2f} (median of {args.rounds} rounds)"
        )
        results[model] = rows
    return results


if __name__ == "__main__":
    run(parse_args())
