"""Data-parallel scaling of the train stage: examples/s at 1 and 2 Ray workers, and Ray's start-up cost.

What is measured (same config, data, seed, global batch and epochs for every worker count):

* **steady examples/s** per worker count: :func:`pipeline.training.train.run_train` on a local Ray
  (``cluster.launcher=ray`` for one worker too, so every row runs the same Ray Train path), per-epoch
  numbers from the library's own ``history.json`` (steps x global batch / ``epoch_seconds``),
  epochs 2..N (epoch 1 includes tracing) -- the same definition as ``bench/train_overhead.py``,
  whose helpers this script reuses.
* **fixed cost of a run**: its wall time minus the time its epochs took (Ray start, worker start,
  TensorFlow import in each worker, final checkpoint, shutdown).
* **bare Ray start-up**: ``ray.init`` of a local Ray plus ``ray.shutdown``, nothing else.

Printed as ratios: 2-worker / 1-worker throughput (ideal 2.0 with two free devices; on one
2-core CPU box both workers share the cores, so expect <= 1), and fixed cost / wall time.
Nothing is asserted. Every output goes to a temporary directory deleted at the end.

Run it from the repository root (about 2-3 minutes on 2 CPU cores)::

    python bench/scaling.py --model mlp --epochs 10 --batch-size 64

On a GPU host (one worker per GPU; the global batch stays fixed, so raise it with the workers)::

    python bench/scaling.py --model cnn --epochs 10 --batch-size 256 --workers 1 2 --gpu
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/, for train_overhead
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `stages`

from train_overhead import compose_config, run_library, steady  # noqa: E402

import pipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)
from pipeline.data.ingest import run_ingest  # noqa: E402
from pipeline.data.preprocess import run_preprocess  # noqa: E402
from stages._config import compose_conf, to_settings  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="mlp", help="model group option in conf/model (default: mlp)"
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run (default: 10)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="global batch size, the same for every worker count (default: 64)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="worker counts to compare (default: 1 2)",
    )
    parser.add_argument(
        "--data", default="digits", help="data group option in conf/data (default: digits)"
    )
    parser.add_argument("--gpu", action="store_true", help="cluster=gpu: one worker per GPU")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: steady state excludes the first epoch")
    if any(args.batch_size % workers for workers in args.workers):
        parser.error(
            "--batch-size must be divisible by every --workers count (it is the global batch)"
        )
    return args


def bare_ray_startup() -> float:
    """Seconds for ``ray.init`` of a local Ray plus ``ray.shutdown``."""
    import ray

    from pipeline.env import quiet_native_stderr, worker_env_vars

    started = time.perf_counter()
    with quiet_native_stderr():
        ray.init(
            num_cpus=1,
            num_gpus=0,
            include_dashboard=False,
            logging_level=logging.ERROR,
            runtime_env={"env_vars": worker_env_vars()},
        )
    ray.shutdown()
    return time.perf_counter() - started


def run_workers(args: argparse.Namespace, root: Path, workers: int) -> dict:
    """One library run with ``workers`` workers: wall, steady examples/s and fixed cost."""
    config = compose_config(
        argparse.Namespace(**{**vars(args), "workers": workers}), root, on_ray=True
    )
    if args.gpu:  # the gpu preset's cluster settings, outputs still under root
        gpu = to_settings(compose_conf(["cluster=gpu", f"cluster.num_workers={workers}"])).cluster
        config = dataclasses.replace(
            config,
            cluster=dataclasses.replace(
                gpu, storage_dir=config.cluster.storage_dir, launcher="ray"
            ),
        )
    result = run_library(config)
    return {
        "workers": workers,
        "wall": result["wall"],
        "rate": steady(result["epoch_seconds"], result["examples_per_epoch"]),
        "epochs_seconds": sum(result["epoch_seconds"]),
        "fixed": result["wall"] - sum(result["epoch_seconds"]),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        root = Path(tmp)
        config = compose_config(argparse.Namespace(**{**vars(args), "workers": 1}), root)
        run_ingest(config.data, Path(config.paths.raw))
        run_preprocess(
            config.preprocess, config.seed, Path(config.paths.raw), Path(config.paths.processed)
        )
        print("timing a bare local Ray start + shutdown ...", flush=True)
        startup = bare_ray_startup()
        rows = []
        for workers in args.workers:
            print(
                f"running the train stage's library path with {workers} worker(s) ...", flush=True
            )
            rows.append(run_workers(args, root, workers))

    print()
    print(
        f"scaling: model={args.model} data={args.data} epochs={args.epochs} global batch={args.batch_size} "
        f"({os.cpu_count()} CPU cores{', GPU preset' if args.gpu else ''})"
    )
    print(
        f"{'workers':>7} {'wall s':>8} {'epochs s':>9} {'fixed s':>8} {'steady ex/s':>12} {'vs 1st':>7}"
    )
    for row in rows:
        print(
            f"{row['workers']:>7} {row['wall']:8.1f} {row['epochs_seconds']:9.1f} {row['fixed']:8.1f} {row['rate']:12.0f} "
            f"{row['rate'] / rows[0]['rate']:7.2f}"
        )
    print(f"bare Ray start + shutdown: {startup:.1f} s")
    for row in rows:
        print(
            f"{row['workers']} worker(s): fixed cost / wall = {row['fixed'] / row['wall']:.2f}; "
            f"bare Ray start-up / fixed cost = {startup / row['fixed']:.2f}"
        )


if __name__ == "__main__":
    main()
