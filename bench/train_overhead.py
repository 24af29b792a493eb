"""Overhead of the train stage's library path against a plain ``model.fit``, in one run.

What is measured (same config, model, data, seed and number of epochs for both paths):

* **plain fit**: the train/val splits loaded with :func:`pipeline.data.shards.load_split`, the model
  built with :func:`pipeline.training.models.build_model` / :func:`~pipeline.training.models.compile_model`, then
  ``model.fit(x, y, batch_size, epochs, validation_data=..., verbose=0)`` in this process, timed
  per epoch by a small callback (examples/s = train examples / epoch seconds). Its wall time
  covers importing TensorFlow (if not yet imported), building the model and the fit.
* **library**: :func:`pipeline.training.train.run_train` as the train stage runs it: one worker
  trains in a child process without Ray (:mod:`pipeline.training.local`), 2+ workers on a local
  Ray (Ray Train with a ``TF_CONFIG`` backend, one ``MultiWorkerMirroredStrategy`` replica per
  worker); ``tf.data`` input, TensorBoard, a checkpoint every ``train.checkpoint_every`` epochs. Per-epoch numbers are the library's own
  ``epoch_seconds`` / ``examples_per_second`` from ``history.json`` (steps x global batch per
  epoch). Its wall time is the whole ``run_train`` call.
* **library, epoch to epoch**: the same run timed from the wall-clock stamps of the per-epoch
  TensorBoard summaries. ``epoch_seconds`` stops inside the library's progress callback, before
  the per-epoch Ray report and checkpoint; the TensorBoard stamps include them, so this row is
  what a user actually gets per epoch.

Steady state excludes epoch 1 (it includes tracing): steady ex/s = examples in epochs 2..N /
seconds of epochs 2..N. The fixed start-up cost of the library is its wall time minus the time
its epochs took (sum of ``epoch_seconds``): Ray start, worker start, TensorFlow import in the
worker, final checkpoint, shutdown (and any per-epoch reporting outside ``epoch_seconds``,
broken out on the next line when the TensorBoard stamps are available).

Early stopping and ReduceLROnPlateau are disabled so both paths run exactly ``--epochs`` epochs.
Every output (raw, processed, models, TensorBoard, Ray storage) goes to a temporary directory
that is deleted at the end; nothing under the repository changes. Nothing is asserted: the
script prints a table and the ratios (target: library / plain >= 0.9 at one worker).

The machine's speed drifts (a shared host): ``--rounds`` (default 2) alternates plain and library
runs and compares the medians; every round's ratio is printed too.

Run it from the repository root (about 2-3 minutes on 2 CPU cores)::

    python bench/train_overhead.py --epochs 20
    python bench/train_overhead.py --model mlp --epochs 10 --workers 2 --batch-size 64
    python bench/train_overhead.py --model mlp --epochs 3 --batch-size 64 --ray --warm

``--ray`` adds the library on a local Ray started by the run (``cluster.launcher=ray``: what one
worker cost before it trained without Ray). ``--warm`` adds the library on a local Ray the bench
starts once with ``ray start --head`` and every run joins (``cluster.address``), as a user who
keeps a Ray running gets; the fixed cost then excludes Ray's own start and shutdown.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `stages`

import pipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)
from pipeline.data.ingest import run_ingest  # noqa: E402
from pipeline.data.preprocess import run_preprocess  # noqa: E402
from pipeline.data.shards import load_split  # noqa: E402
from pipeline.env import import_tensorflow, quiet_tensorflow_loggers  # noqa: E402
from pipeline.io import read_json  # noqa: E402
from pipeline.settings import (
    PipelineConfig,  # noqa: E402
    TrainRequest,
)
from pipeline.training.model_io import HISTORY_FILE  # noqa: E402
from pipeline.training.models import build_model, compile_model  # noqa: E402
from pipeline.training.train import run_train  # noqa: E402
from stages._config import compose_conf, to_settings  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="cnn", help="model group option in conf/model (default: cnn)"
    )
    parser.add_argument(
        "--epochs", type=int, default=20, help="epochs for both paths (default: 20)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="Ray Train workers for the library path (default: 1)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="global batch size (default: 32)"
    )
    parser.add_argument(
        "--data", default="digits", help="data group option in conf/data (default: digits)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternate plain and library runs this many times; medians are compared (default: 2)",
    )
    parser.add_argument(
        "--ray",
        action="store_true",
        help="also run the library path on a local Ray the run starts (cluster.launcher=ray)",
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="also run the library path on a warm local Ray started once with `ray start --head` "
        "(cluster.address pointing at it), as a user who keeps one running gets",
    )
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: steady state excludes the first epoch")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def compose_config(
    args: argparse.Namespace,
    root: Path,
    round_: int = 0,
    address: str | None = None,
    on_ray: bool = False,
) -> PipelineConfig:
    """``conf/`` plus the benchmark's overrides; every output under ``root`` (a fresh run per round)."""
    return to_settings(
        compose_conf(
            [
                *([f"cluster.address={address}"] if address else []),
                *(["cluster.launcher=ray"] if on_ray else []),
                f"data={args.data}",
                f"model={args.model}",
                f"train.epochs={args.epochs}",
                f"train.batch_size={args.batch_size}",
                f"cluster.num_workers={args.workers}",
                "train.early_stopping.enabled=false",
                "train.reduce_lr.enabled=false",
                "train.run_name=bench",
                f"paths.raw={root}/raw",
                f"paths.processed={root}/processed",
                f"paths.models={root}/models-{round_}",
                f"paths.reports={root}/reports",
                f"paths.exports={root}/exports",
                f"train.tensorboard_dir={root}/tensorboard-{round_}",
                f"cluster.storage_dir={root}/ray-{round_}",
            ]
        )
    )


def steady(epoch_seconds: list[float], examples_per_epoch: list[float]) -> float:
    """Examples/s over epochs 2..N (epoch 1 includes tracing)."""
    return sum(examples_per_epoch[1:]) / sum(epoch_seconds[1:])


def run_plain(config: PipelineConfig) -> dict:
    """Plain ``model.fit`` on the in-memory splits, timed per epoch."""
    started = time.perf_counter()
    tf = import_tensorflow()
    quiet_tensorflow_loggers()
    processed = Path(config.paths.processed)
    meta = read_json(processed / "meta.json")
    x_train, y_train = load_split(processed, "train")
    x_val, y_val = load_split(processed, "val")
    num_classes = len(meta["class_names"])

    class EpochTimer(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    tf.keras.utils.set_random_seed(config.seed)
    model = compile_model(
        build_model(config.model, tuple(meta["input_shape"]), num_classes),
        config.model,
        config.train,
        num_classes,
    )
    timer = EpochTimer()
    model.fit(
        x_train,
        y_train,
        batch_size=config.train.batch_size,
        epochs=config.train.epochs,
        validation_data=(x_val, y_val),
        callbacks=[timer],
        verbose=0,
    )
    wall = time.perf_counter() - started
    return {
        "wall": wall,
        "epoch_seconds": timer.seconds,
        "examples_per_epoch": [len(x_train)] * len(timer.seconds),
    }


def tensorboard_epoch_stamps(tensorboard_dir: Path) -> list[float]:
    """Wall-clock time of each epoch's ``epoch_loss`` summary (written at the end of the epoch)."""
    tf = import_tensorflow()
    stamps: dict[int, float] = {}
    for path in sorted((Path(tensorboard_dir) / "train").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            if any(value.tag == "epoch_loss" for value in event.summary.value):
                stamps[int(event.step)] = event.wall_time
    return [stamps[step] for step in sorted(stamps)]


def run_library(config: PipelineConfig) -> dict:
    """The train stage's library call, with its own per-epoch numbers from ``history.json``."""
    request = TrainRequest.from_config(config)
    models = Path(config.paths.models)
    started = time.perf_counter()
    run_train(
        request,
        Path(config.paths.processed),
        models,
        tensorboard_root=Path(config.train.tensorboard_dir),
        storage_dir=Path(config.cluster.storage_dir),
    )
    wall = time.perf_counter() - started
    history = read_json(models / HISTORY_FILE)
    seconds = history["epoch_seconds"]
    examples = [rate * s for rate, s in zip(history["examples_per_second"], seconds, strict=False)]
    result = {
        "wall": wall,
        "epoch_seconds": seconds,
        "examples_per_epoch": examples,
        "periods": None,
    }
    try:
        stamps = tensorboard_epoch_stamps(Path(read_json(models / "run.json")["tensorboard_dir"]))
    except Exception as error:  # a diagnostic extra: the main numbers stand without it
        print(f"note: could not read the TensorBoard epoch stamps ({error})", file=sys.stderr)
        stamps = []
    if len(stamps) == len(seconds):
        # period k (k >= 2) = end of epoch k - end of epoch k-1: includes the report/checkpoint of k-1
        result["periods"] = [stamps[k] - stamps[k - 1] for k in range(1, len(stamps))]
    return result


@contextlib.contextmanager
def warm_ray(num_cpus: int) -> Iterator[str]:
    """A local Ray head started the way a user keeps one running (``ray start --head``); yields
    its address. Stopped by killing its own process session (``ray stop`` would stop every Ray on
    the machine)."""
    temp = Path(tempfile.mkdtemp(prefix="rw", dir="/tmp"))  # Ray's socket paths have a length limit
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = temp / "head.log"
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            f"--temp-dir={temp}/ray",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        start_new_session=True,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start --head failed:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def fixed_cost(run: dict) -> float:
    """A library run's wall time minus the time its epochs took."""
    return run["wall"] - sum(run["epoch_seconds"])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="train-overhead-"))
        address = stack.enter_context(warm_ray(args.workers + 1)) if args.warm else None
        root = Path(tmp)
        config = compose_config(args, root)
        run_ingest(config.data, Path(config.paths.raw))
        run_preprocess(
            config.preprocess, config.seed, Path(config.paths.raw), Path(config.paths.processed)
        )
        plains, libraries, colds, warms = [], [], [], []
        launcher = "1 local worker, no Ray" if args.workers == 1 else f"{args.workers} Ray workers"
        for round_ in range(
            args.rounds
        ):  # alternated: a shared machine's speed drifts over minutes
            config = compose_config(args, root, round_)
            print(f"round {round_ + 1}/{args.rounds}: plain model.fit ...", flush=True)
            plains.append(run_plain(config))
            print(
                f"round {round_ + 1}/{args.rounds}: library path (run_train, {launcher}) ...",
                flush=True,
            )
            libraries.append(run_library(config))
            if args.ray:
                print(
                    f"round {round_ + 1}/{args.rounds}: library path on a local Ray it starts ...",
                    flush=True,
                )
                colds.append(
                    run_library(compose_config(args, root, round_ + 2 * args.rounds, on_ray=True))
                )
            if address:
                print(
                    f"round {round_ + 1}/{args.rounds}: library path on the warm Ray at {address} ...",
                    flush=True,
                )
                warms.append(run_library(compose_config(args, root, round_ + args.rounds, address)))

    epochs = args.epochs
    plain_rates = [steady(run["epoch_seconds"], run["examples_per_epoch"]) for run in plains]
    library_rates = [steady(run["epoch_seconds"], run["examples_per_epoch"]) for run in libraries]
    plain_rate, library_rate = statistics.median(plain_rates), statistics.median(library_rates)
    # the table shows the round whose library rate is closest to the median
    shown = min(range(args.rounds), key=lambda index: abs(library_rates[index] - library_rate))
    plain, library = plains[shown], libraries[shown]
    rows = [
        ("plain fit", plain["wall"], plain["epoch_seconds"], plain_rates[shown]),
        ("library", library["wall"], library["epoch_seconds"], library_rates[shown]),
    ]
    periods = library["periods"]
    if periods:
        period_rate = sum(library["examples_per_epoch"][1:]) / sum(periods)
        rows.append(("library, epoch to epoch", None, None, period_rate))
    print()
    print(
        f"train overhead: model={args.model} data={args.data} epochs={epochs} workers={args.workers} "
        f"batch={args.batch_size} ({os.cpu_count()} CPU cores)"
    )
    print(
        f"{'path':<24} {'wall s':>8} {'epoch 1 s':>10} {f'epochs 2-{epochs} s':>14} {'steady ex/s':>12}"
    )
    for name, wall, seconds, rate in rows:
        wall_text = f"{wall:8.1f}" if wall is not None else f"{'':>8}"
        first = f"{seconds[0]:10.2f}" if seconds else f"{'':>10}"
        rest = f"{sum(seconds[1:]):14.2f}" if seconds else f"{sum(periods):14.2f}"
        print(f"{name:<24} {wall_text} {first} {rest} {rate:12.0f}")
    print(
        f"examples per epoch: plain {plain['examples_per_epoch'][0]:.0f} (train split), "
        f"library {library['examples_per_epoch'][0]:.0f} (steps x global batch)"
    )
    print(
        "steady ex/s per round: "
        + ", ".join(
            f"plain {p:.0f} / library {q:.0f} ({q / p:.2f})"
            for p, q in zip(plain_rates, library_rates, strict=False)
        )
    )
    print(
        f"steady-state throughput ratio (library / plain, medians of {args.rounds} rounds): "
        f"{library_rate / plain_rate:.2f}  (target >= 0.9)"
    )
    if periods:
        print(
            f"steady-state throughput ratio, epoch to epoch (round {shown + 1}, library / plain median): "
            f"{period_rate / plain_rate:.2f}"
        )
    fixed = statistics.median(fixed_cost(run) for run in libraries)
    print(
        f"fixed start-up cost of the library path ({launcher}, median): {fixed:.1f} s (process and "
        f"worker start, TensorFlow import, final save, shutdown); plain fit wall: {plain['wall']:.1f} s"
    )
    for name, runs in (
        ("a local Ray the run starts (cluster.launcher=ray)", colds),
        ("a warm Ray (`ray start --head` kept running)", warms),
    ):
        if runs:
            print(
                f"fixed start-up cost on {name}, median: "
                f"{statistics.median(fixed_cost(run) for run in runs):.1f} s; per round: "
                + ", ".join(f"{fixed_cost(run):.1f}" for run in runs)
            )
    if periods:
        between = sum(periods) - sum(library["epoch_seconds"][1:])
        print(
            f"  of which between epochs 2-{epochs} (per-epoch checkpoint and Ray report, outside epoch_seconds): "
            f"{between:.1f} s ({between / (epochs - 1) * 1000:.0f} ms/epoch)"
        )


if __name__ == "__main__":
    main()
