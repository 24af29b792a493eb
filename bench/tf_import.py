"""What importing TensorFlow costs a process: a plain ``import tensorflow`` against the pipeline's
(:func:`pipeline.env.import_tensorflow`, which leaves out the libraries in
:data:`pipeline.env.DEFERRED_IMPORTS`), side by side in one run.

Every process the pipeline starts pays this once: each stage that loads a model, the local
training worker, each Ray Train worker, the model check. Each side runs in a fresh child process
(``--rounds`` times, alternating, so the machine's drift hits both alike) that imports TensorFlow
with the Keras flavour switch set and reports its wall time and its CPU time (user + system);
the table shows the medians and the ratios pipeline / plain. Nothing is asserted.

Run it from the repository root (about a minute on 2 CPU cores)::

    python bench/tf_import.py --rounds 5
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
watched = {watched!r}
print(json.dumps({{"wall": time.perf_counter() - start, "cpu": usage.ru_utime + usage.ru_stime,
                  "modules": [name for name in watched if name in sys.modules]}}))
"""
SIDES = {"plain import tensorflow": False, "pipeline.env.import_tensorflow": True}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="child processes per side")
    return parser.parse_args(argv)


def measure(pipeline: bool) -> dict:
    """One fresh child importing TensorFlow one way."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(pipeline=pipeline, watched=DEFERRED_IMPORTS)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict[str, dict]:
    """Alternate the sides ``args.rounds`` times; print and return each side's medians."""
    samples: dict[str, list[dict]] = {side: [] for side in SIDES}
    for round_index in range(args.rounds):
        for side, pipeline in SIDES.items():
            samples[side].append(measure(pipeline))
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    rows = {
        side: {
            "wall": statistics.median(sample["wall"] for sample in runs),
            "cpu": statistics.median(sample["cpu"] for sample in runs),
            "modules": runs[-1]["modules"],
        }
        for side, runs in samples.items()
    }
    print(f"{'import':34} {'wall s':>7} {'CPU s':>7}  of {', '.join(DEFERRED_IMPORTS)}: imported")
    for side, row in rows.items():
        modules = ", ".join(row["modules"]) or "none"
        print(f"{side:34} {row['wall']:7.2f} {row['cpu']:7.2f}  {modules}")
    plain, ours = (rows[side] for side in SIDES)
    print(
        f"ratio pipeline / plain: wall {ours['wall'] / plain['wall']:.2f}, "
        f"CPU {ours['cpu'] / plain['cpu']:.2f} (median of {args.rounds} rounds)"
    )
    return rows


if __name__ == "__main__":
    run(parse_args())
