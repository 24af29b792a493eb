"""Measured value of ``model.weights``: a backbone pretrained on one dataset, then trained on another,
against the same backbone trained from scratch for the same epochs.

What is run (every output in a temporary directory deleted at the end; nothing is asserted):

1. **pretrain**: ``model=backbone`` (MobileNetV2 at 32x32 by default, ``model.weights=null``, so
   the whole network trains) on a seeded, class-balanced subset of Fashion-MNIST (Debian's
   ``dataset-fashion-mnist``: the IDX files under ``/usr/share/datasets/fashion-mnist``).
2. its backbone's weights saved with ``save_weights`` to ``backbone.h5``: the file ``model.weights``
   takes (the backbone without its top).
3. **the target**: a seeded, class-balanced subset of the MNIST test set (the IDX files
   ``mnist-t10k-*`` in ``../shared/data``) or of scikit-learn's 8x8 digits (``--target digits``),
   trained ``--epochs`` epochs three ways with the same config, seed and data:

   * ``from scratch``: ``model.weights=null``;
   * ``pretrained, frozen``: ``model.weights=backbone.h5``, ``model.freeze=true`` (the head trains);
   * ``pretrained, all layers``: ``model.weights=backbone.h5``, ``model.freeze=false``.

Every run is the product path without Ray: ingest (``data=npz`` or ``data=digits``), preprocess,
then :func:`pipeline.training.worker.fit_model` (the loop every Ray worker runs: the model built
from the config, weights loaded and frozen as configured, the pipeline's callbacks), and test
accuracy from :mod:`pipeline.evaluation.evaluate`'s functions on the test split. Ray's start-up
(~25 s per run here) is left out: it is not what this measures. Early stopping and
ReduceLROnPlateau are off so every run trains exactly its epochs. Printed: each run's test
accuracy, its difference from training from scratch, and its training time.

Run it from the repository root (about 5 minutes on 2 CPU cores; ``--quick``, a smoke run whose
figures mean little, about 2.5: each of the four trainings spends ~25 s building MobileNetV2 and
tracing its training step, whatever the data's size)::

    python bench/transfer.py
    python bench/transfer.py --quick
    python bench/transfer.py --target digits --epochs 10
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repo root, for `stages`

import pipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
MNIST_DIR = REPO.parent / "shared" / "data"  # mnist-t10k-{images-idx3,labels-idx1}-ubyte.gz
TARGET_TEST_FRACTION = 0.5  # a large test split: accuracy differences of ~2 points stay visible
RUNS = (  # name, weights from pretraining?, model.freeze
    ("from scratch", False, False),
    ("pretrained, frozen", True, True),
    ("pretrained, all layers", True, False),
)
QUICK = {"pretrain_examples": 2000, "pretrain_epochs": 2, "target_examples": 600, "epochs": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source-dir",
        type=Path,
        default=FASHION_DIR,
        help=f"Fashion-MNIST IDX files, pretraining's data (default: {FASHION_DIR})",
    )
    parser.add_argument(
        "--target",
        choices=("mnist", "digits"),
        default="mnist",
        help="the dataset trained after pretraining: the MNIST test set's IDX files in "
        "--mnist-dir, or scikit-learn's 8x8 digits (default: mnist)",
    )
    parser.add_argument(
        "--mnist-dir",
        type=Path,
        default=MNIST_DIR,
        help=f"folder with mnist-t10k-*-ubyte.gz (default: {MNIST_DIR})",
    )
    parser.add_argument(
        "--backbone", default="MobileNetV2", help="model.backbone (default: MobileNetV2)"
    )
    parser.add_argument(
        "--input-size", type=int, default=32, help="model.input_size, square (default: 32)"
    )
    parser.add_argument(
        "--pretrain-examples",
        type=int,
        default=20000,
        help="Fashion-MNIST examples pretraining draws (70%% train) (default: 20000)",
    )
    parser.add_argument(
        "--pretrain-epochs", type=int, default=3, help="pretraining's epochs (default: 3)"
    )
    parser.add_argument(
        "--target-examples",
        type=int,
        default=2000,
        help="MNIST examples drawn (digits takes its 1797): 40%% train, 10%% validation, "
        "50%% test (default: 2000)",
    )
    parser.add_argument(
        "--epochs", type=int, default=5, help="epochs of every target run (default: 5)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="batch size, conf's (default: 32)"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of subsets, splits and weights")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke-sized run (about 2.5 minutes): "
        + ", ".join(f"--{key.replace('_', '-')} {value}" for key, value in QUICK.items()),
    )
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    for key in ("pretrain_examples", "target_examples", "pretrain_epochs", "epochs", "batch_size"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    return args


def balanced_subset(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices of ``count`` examples (or all), drawn without replacement, every class as equally
    represented as ``count`` allows, in a seeded random order."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == label)) for label in classes]
    picked: list[int] = []
    rank = 0
    while len(picked) < min(count, len(labels)):
        for members in per_class:  # one example of each class per round
            if rank < len(members) and len(picked) < count:
                picked.append(int(members[rank]))
        rank += 1
    return rng.permutation(np.asarray(picked, dtype=np.int64))


def missing_data(args: argparse.Namespace) -> str | None:
    """Why the bench cannot run here (the data it needs is absent), or None."""
    if not any(args.source_dir.glob("*train-images*idx3-ubyte*")):
        return (
            f"no Fashion-MNIST IDX files in {args.source_dir}: install Debian's "
            "dataset-fashion-mnist or give --source-dir"
        )
    if args.target == "mnist" and not any(args.mnist_dir.glob("*t10k-images*idx3-ubyte*")):
        return f"no MNIST t10k IDX files in {args.mnist_dir}: give --mnist-dir or --target digits"
    return None


def write_subset_npz(folder: Path, count: int, seed: int, path: Path) -> Path:
    """A balanced subset of an IDX folder's examples as an ``.npz`` for ``data=npz``."""
    from pipeline.data.sources.keras import read_idx_folder

    x, y, _ = read_idx_folder(folder)
    keep = balanced_subset(y, count, seed)
    np.savez(path, x=x[keep], y=y[keep].astype(np.int64))
    return path


def compose(args: argparse.Namespace, root: Path, data: list[str], *extra: str):
    """``conf/`` plus the benchmark's overrides for one run; every output under ``root``."""
    from stages._config import compose_conf, to_settings

    return to_settings(
        compose_conf(
            [
                *data,
                "model=backbone",
                f"model.backbone={args.backbone}",
                f"model.input_size=[{args.input_size},{args.input_size}]",
                f"train.batch_size={args.batch_size}",
                "train.early_stopping.enabled=false",
                "train.reduce_lr.enabled=false",
                f"seed={args.seed}",
                f"paths.raw={root}/raw",
                f"paths.processed={root}/processed",
                *extra,
            ]
        )
    )


def prepare(config) -> Path:
    """Ingest and preprocess ``config``'s data; return the processed folder."""
    from pipeline.data.ingest import run_ingest
    from pipeline.data.preprocess import run_preprocess

    raw, processed = Path(config.paths.raw), Path(config.paths.processed)
    run_ingest(config.data, raw)
    run_preprocess(config.preprocess, config.seed, raw, processed)
    return processed


def train_and_test(config, processed: Path, tensorboard_dir: Path):
    """The worker's fit path in this process; ``(model, test accuracy, fit seconds)``."""
    from pipeline.data.shards import load_split
    from pipeline.evaluation.evaluate import compute_metrics, predict_probabilities
    from pipeline.io import read_json
    from pipeline.settings import TrainRequest
    from pipeline.training.train import train_job
    from pipeline.training.worker import fit_model

    job = train_job(TrainRequest.from_config(config), processed, tensorboard_dir)
    started = time.perf_counter()
    model, _ = fit_model(job, rank=0, world_size=1)
    seconds = time.perf_counter() - started
    x, y = load_split(processed, "test")
    names = [str(name) for name in read_json(processed / "meta.json")["class_names"]]
    metrics, _ = compute_metrics(y, predict_probabilities(model, x, 256), names)
    return model, metrics["accuracy"], seconds


def split_sizes(meta: dict) -> dict[str, int]:
    """Examples per split, from preprocess's ``meta.json``."""
    return {
        split: sum(shard["num_examples"] for shard in shards)
        for split, shards in meta["splits"].items()
    }


def format_rows(rows: list[tuple[str, float, float]]) -> list[str]:
    """The table: each run's test accuracy, its difference from the first row's, its seconds."""
    baseline = rows[0][1]
    lines = [f"{'run':<24} {'test accuracy':>13} {'vs scratch':>10} {'fit s':>7}"]
    for name, accuracy, seconds in rows:
        lines.append(f"{name:<24} {accuracy:13.4f} {accuracy - baseline:+10.4f} {seconds:7.1f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = missing_data(args)
    if reason:
        print(f"bench/transfer.py skipped: {reason}")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    from pipeline.env import import_tensorflow, quiet_tensorflow_loggers
    from pipeline.io import read_json
    from pipeline.training.backbone import find_backbone

    import_tensorflow()
    quiet_tensorflow_loggers()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="transfer-") as tmp:
        root = Path(tmp)
        source_npz = write_subset_npz(
            args.source_dir, args.pretrain_examples, args.seed, root / "fashion.npz"
        )
        config = compose(
            args,
            root / "source",
            ["data=npz", f"data.path={source_npz}"],
            f"train.epochs={args.pretrain_epochs}",
        )
        print(
            f"pretraining {args.backbone} on {args.pretrain_examples} Fashion-MNIST examples, "
            f"{args.pretrain_epochs} epochs ...",
            flush=True,
        )
        model, source_accuracy, source_seconds = train_and_test(
            config, prepare(config), root / "tb-source"
        )
        weights = root / "backbone.h5"
        find_backbone(model).save_weights(str(weights))

        if args.target == "mnist":
            target_npz = write_subset_npz(
                args.mnist_dir, args.target_examples, args.seed, root / "mnist.npz"
            )
            data = ["data=npz", f"data.path={target_npz}"]
        else:
            data = ["data=digits"]
        test_fraction = [
            f"preprocess.test_fraction={TARGET_TEST_FRACTION}",
            "preprocess.val_fraction=0.1",
        ]
        processed = prepare(compose(args, root / "target", data, *test_fraction))
        sizes = split_sizes(read_json(processed / "meta.json"))
        rows = []
        for name, pretrained, freeze in RUNS:
            print(f"{args.target}: {name}, {args.epochs} epochs ...", flush=True)
            config = compose(
                args,
                root / "target",
                data,
                *test_fraction,
                f"train.epochs={args.epochs}",
                f"model.weights={weights if pretrained else 'null'}",
                f"model.freeze={str(freeze).lower()}",
            )
            _, accuracy, seconds = train_and_test(config, processed, root / f"tb-{len(rows)}")
            rows.append((name, accuracy, seconds))

    print()
    print(
        f"transfer: {args.backbone} {args.input_size}x{args.input_size}, pretrained on "
        f"{args.pretrain_examples} Fashion-MNIST examples for {args.pretrain_epochs} epochs "
        f"(its test accuracy {source_accuracy:.4f}, {source_seconds:.0f} s), then "
        f"{args.target} (train {sizes['train']}, validation {sizes['val']}, test "
        f"{sizes['test']} examples) for {args.epochs} epochs, batch {args.batch_size} "
        f"({os.cpu_count()} CPU cores)"
    )
    for line in format_rows(rows):
        print(line)
    print(f"total wall time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
