"""The whole DVC graph against a plain Keras script doing the same work, back to back in one run.

What is measured, per dataset (digits; Fashion-MNIST from Debian's IDX files when installed):

* **graph**: ``dvc repro`` in a temporary copy of the working tree (every file git tracks or would
  track, uncommitted edits included, committed to a fresh git repository, so DVC runs every
  stage: compose, ingest, preprocess, train, evaluate, gate, export), from launching ``dvc`` to its
  exit. Each stage process appends its own timings to the file ``KP_STAGE_TIMINGS`` names
  (stages/_common.py): **start-up** (process start to the library call: interpreter, imports,
  config composition; the compose stage's work is the composition), **work** (the library call)
  and **exit** (from its end to the process's end: atexit hooks and the interpreter's teardown).
  The rest of the wall time is DVC's: its own start and exit, checking and caching each stage's
  deps and outputs; the column "before" shows that share per stage: the gap between the previous
  stage process's end (or ``dvc``'s launch) and this one's start.
* **plain**: what a user writes by hand, in a fresh Python process (it pays its own interpreter and
  TensorFlow start-up): the data loaded directly (scikit-learn's digits, the IDX files) and split
  in the graph's stratified train/val/test proportions with its seed, scaled to [0, 1]; the seeds'
  five steps: define (the graph's own builder, :func:`pipeline.training.models.build_model`, so
  the architecture is identical), compile (same optimizer, learning rate, loss and steps per
  execution), fit (same epochs, batch, early stopping and learning-rate schedule), evaluate and
  predict on the test split; then a SavedModel, the float32 TFLite model, the graph's quantized
  TFLite variants and, when the graph exports TF.js, the official converter's graph model. It checks
  none of them: the graph checks every export against the trained model (parity, accuracy,
  latency, TF.js in Node.js), which is part of its export stage's work.

Both sides run the same config: the copy's ``conf/`` (the one place defaults live) with a preset,
``conf/experiment/bench.yaml``, selected in its ``conf/config.yaml``: digits with the defaults
(CNN and the default epochs and batch), Fashion-MNIST with the CNN, 5 epochs and batch 128;
``--epochs`` and ``--batch-size`` override both; ``--exports float`` keeps only the SavedModel and
the float32 TFLite model, on both sides.

Printed per dataset: each side's wall time, test accuracy and epochs run, the ratio graph / plain
against its target (digits <= 2.5; Fashion-MNIST <= 1.3, both with every default export), the
graph's per-stage table against the per-stage target (start-up + exit <= 5 s) and the plain
script's steps. Nothing is asserted. The machine's speed drifts, so both sides run back to back,
graph first (printed); the temporary directory is deleted unless ``--keep``. Every time is on the
boot clock (Linux's ``CLOCK_BOOTTIME``), which the stage timings use too: on this project's VM
the wall clock once moved 22 s beyond it within one stage; such a gap during a run is printed.

Run it from the repository root (digits about 2-3 minutes on 2 CPU cores; Fashion-MNIST with every
default export about 6 minutes)::

    python bench/pipeline_vs_plain.py --dataset digits
    python bench/pipeline_vs_plain.py --dataset fashion-mnist --epochs 1 --exports float
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repo root, for `pipeline` and `stages`

# stages/_common.py's switch (not imported here: the plain side imports only what a user's would)
TIMINGS_ENV = "KP_STAGE_TIMINGS"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
# dataset -> (conf/data option, data.path, epochs, batch size); None keeps conf/'s default
DATASETS = {
    "digits": ("digits", None, None, None),
    "fashion-mnist": ("fashion_mnist", FASHION_DIR, 5, 128),
}
TARGETS = {"digits": 2.5, "fashion-mnist": 1.3}  # graph / plain wall, with every default export
STAGE_OVERHEAD_TARGET_S = 5.0  # start-up + exit of each stage process
EXPORT_CHECK_SHARE_TARGET = (
    0.25  # export verification / the train stage's work, Fashion-MNIST with default exports
)
PRESET = "bench"


def boot_clock() -> float:
    """Seconds on Linux's boot clock, the stage timings' clock (stages/_common.py: the VM's wall
    clock jumps against it); elsewhere the wall clock."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.time() if boottime is None else time.clock_gettime(boottime)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        choices=["digits", "fashion-mnist", "both"],
        default="both",
        help=f"digits, Fashion-MNIST (from {FASHION_DIR}; skipped when absent) or both (default: both)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="epochs on both sides (default: conf/'s for digits, 5 for Fashion-MNIST)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="global batch on both sides (default: conf/'s for digits, 128 for Fashion-MNIST)",
    )
    parser.add_argument(
        "--exports",
        choices=["default", "float"],
        default="default",
        help="default: conf/'s export list; float: SavedModel + float32 TFLite only (default: default)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory and print its path"
    )
    parser.add_argument("--plain", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


# ----------------------------------------------------------------------------- the plain side


def read_idx(path: Path):
    """One IDX file (MNIST's format: zero bytes, dtype code, rank, big-endian sizes, uint8 data)."""
    import numpy as np

    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    rank = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(shape)


def idx_file(folder: Path, name: str) -> Path:
    found = sorted(folder.glob(f"*{name}*"))
    if not found:
        raise FileNotFoundError(f"no *{name}* file in {folder}")
    return found[0]


def load_data(config):
    """Images scaled to [0, 1] with a channel axis, and labels, straight from the source."""
    import numpy as np

    if config.data.name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images[..., None].astype("float32") / 16.0, digits.target
    folder = Path(config.data.path)
    x = np.concatenate([read_idx(idx_file(folder, f"{part}-images")) for part in ("train", "t10k")])
    y = np.concatenate([read_idx(idx_file(folder, f"{part}-labels")) for part in ("train", "t10k")])
    return x[..., None].astype("float32") / 255.0, y.astype("int64")


def export_plain(model, config, x_train, out: Path) -> None:
    """SavedModel, float32 TFLite, the quantized variants the graph exports, and TF.js if it does."""
    import tensorflow as tf

    saved_model = out / "saved_model"
    tf.saved_model.save(model, str(saved_model))
    calibration = x_train[: config.export.calibration_examples]
    for variant in ["float32", *(v for v in config.export.tflite if v != "float32")]:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        if variant != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if variant == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if variant == "int8":
            converter.representative_dataset = lambda: ([example[None]] for example in calibration)
        (out / f"{variant}.tflite").write_bytes(converter.convert())
    if config.export.tfjs:
        subprocess.run(
            [
                str(Path(sys.executable).with_name("tensorflowjs_converter")),
                "--input_format=tf_saved_model",
                "--output_format=tfjs_graph_model",
                str(saved_model),
                str(out / "tfjs"),
            ],
            check=True,
        )


def run_plain(config_file: Path, out: Path) -> None:
    """The plain Keras script (in its own process): the five steps, then the exports.

    Writes ``result.json`` in ``out``: :func:`boot_clock` after each step, test accuracy, epochs run.
    """
    stamps = {}
    import numpy as np
    from sklearn.model_selection import train_test_split

    from pipeline.env import import_tensorflow  # legacy Keras 2 (tf-keras), as the graph runs
    from pipeline.training.models import build_model, steps_per_execution

    tf = import_tensorflow()
    config = pickle.loads(config_file.read_bytes())
    stamps["imports"] = boot_clock()

    x, y = load_data(config)
    test, val, seed = config.preprocess.test_fraction, config.preprocess.val_fraction, config.seed
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val / (1 - test), stratify=y_rest, random_state=seed
    )
    stamps["data"] = boot_clock()

    tf.keras.utils.set_random_seed(seed)
    train = config.train
    model = build_model(config.model, x.shape[1:], int(y.max()) + 1)  # 1. define
    optimizers = {
        "adam": tf.keras.optimizers.Adam,
        "sgd": tf.keras.optimizers.SGD,
        "rmsprop": tf.keras.optimizers.RMSprop,
        "adagrad": tf.keras.optimizers.Adagrad,
    }
    model.compile(  # 2. compile
        optimizer=optimizers[train.optimizer](learning_rate=train.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution(model, train.steps_per_execution),
    )
    callbacks = []
    if train.early_stopping.enabled:
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(
                monitor=train.early_stopping.monitor,
                patience=train.early_stopping.patience,
                restore_best_weights=True,
            )
        )
    if train.reduce_lr.enabled:
        callbacks.append(
            tf.keras.callbacks.ReduceLROnPlateau(
                monitor=train.reduce_lr.monitor,
                factor=train.reduce_lr.factor,
                patience=train.reduce_lr.patience,
            )
        )
    history = model.fit(  # 3. fit
        x_train,
        y_train,
        batch_size=train.batch_size,
        epochs=train.epochs,
        validation_data=(x_val, y_val),
        callbacks=callbacks,
        verbose=0,
    )
    stamps["fit"] = boot_clock()
    batch = config.evaluate.batch_size
    _, accuracy = model.evaluate(x_test, y_test, batch_size=batch, verbose=0)  # 4. evaluate
    predicted = np.argmax(model.predict(x_test, batch_size=batch, verbose=0), axis=1)  # 5. predict
    stamps["evaluate"] = boot_clock()

    export_plain(model, config, x_train, out)
    stamps["export"] = boot_clock()
    result = {
        "stamps": stamps,
        "accuracy": float(accuracy),
        "predicted_accuracy": float(np.mean(predicted == y_test)),
        "epochs": len(history.epoch),
        "splits": [len(x_train), len(x_val), len(x_test)],
    }
    (out / "result.json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------- the graph side


def working_tree_files(repo: Path) -> list[str]:
    """Every file git tracks or would track (uncommitted and untracked edits included), that exists."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    return sorted({name for name in listed if name and (repo / name).is_file()})


def copy_repository(repo: Path, target: Path) -> Path:
    """The working tree's files in a fresh git repository at ``target`` (as tests/conftest.py's ``git_copy``)."""
    for name in working_tree_files(repo):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target / name)
    node_modules = repo / "tools" / "tfjs_runner" / "node_modules"
    if node_modules.is_dir():  # npm's install, not in git: linked, as the tests do
        (target / "tools" / "tfjs_runner" / "node_modules").symlink_to(node_modules)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    for command in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=target, check=True, capture_output=True)
    return target


def preset_yaml(data: str, path: Path | None, epochs, batch_size, exports: str) -> str:
    """``conf/experiment/bench.yaml``: the dataset, epochs, batch and exports both sides run."""
    lines = [
        "# @package _global_",
        "# Written by bench/pipeline_vs_plain.py in its temporary copy of the repository.",
        "defaults:",
        f"  - override /data: {data}",
    ]
    if path is not None:
        lines += ["data:", f"  path: {json.dumps(str(path))}"]
    train = {"epochs": epochs, "batch_size": batch_size}
    if any(value is not None for value in train.values()):
        lines += ["train:"] + [f"  {k}: {v}" for k, v in train.items() if v is not None]
    if exports == "float":
        lines += ["export:", "  tflite: [float32]", "  tfjs: false"]
    return "\n".join(lines) + "\n"


def select_preset(copy: Path, preset_text: str) -> None:
    """Write the preset into the copy's ``conf/experiment/`` and select it in ``conf/config.yaml``."""
    (copy / "conf" / "experiment" / f"{PRESET}.yaml").write_text(preset_text)
    config = copy / "conf" / "config.yaml"
    text, count = re.subn(
        r"^(\s*- experiment:\s*)null", rf"\g<1>{PRESET}", config.read_text(), flags=re.M
    )
    if count != 1:
        raise RuntimeError(f"{config}: no `- experiment: null` line in its defaults list to select")
    config.write_text(text)


def run_graph(copy: Path, timings: Path, log: Path) -> dict:
    """``dvc repro`` in the copy with every stage's timings on (:func:`timed_run`)."""
    env = {**os.environ, "PYTHONPATH": str(copy), TIMINGS_ENV: str(timings)}
    env.pop("DVC_EXP_NAME", None)
    dvc = str(Path(sys.executable).with_name("dvc"))
    return timed_run([dvc, "repro"], copy, env, log, "dvc repro")


def plain_process(config_file: Path, out: Path, log: Path) -> dict:
    """The plain script in a fresh interpreter (this file with ``--plain``; :func:`timed_run`)."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--plain", str(config_file), str(out)]
    return timed_run(command, out, dict(os.environ), log, "the plain script")


def timed_run(command: list[str], cwd: Path, env: dict, log: Path, what: str) -> dict:
    """Run ``command``, its output to ``log``: its launch and wall time on the boot clock, and how
    far the wall clock moved beyond it meanwhile (a VM paused or its clock stepped)."""
    launched, wall_launched = boot_clock(), time.time()
    with log.open("w") as output:
        code = subprocess.run(
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT
        ).returncode
    wall = boot_clock() - launched
    if code != 0:
        raise RuntimeError(f"{what} failed ({code}); its output:\n{log.read_text()[-3000:]}")
    return {"launched": launched, "wall": wall, "clock_jump": time.time() - wall_launched - wall}


def read_timings(path: Path, stages: list[str], timeout: float = 10) -> list[dict]:
    """The stage processes' lines, in start order, once every stage that ran has one: each is
    appended by a watcher just after its process ends (stages/_common.py), maybe after ``dvc``'s."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        if {line["stage"] for line in lines} >= set(stages) or time.monotonic() > deadline:
            return sorted(lines, key=lambda line: line["clock_start"])
        time.sleep(0.1)


# ----------------------------------------------------------------------------- the report


def stage_rows(lines: list[dict], launched: float, wall: float) -> list[dict]:
    """Per stage: before (DVC's gap since the previous stage process ended), start-up, work, exit, total."""
    rows, previous_end = [], launched
    for line in lines:
        exit_s = line.get("exit_s") or 0.0
        rows.append(
            {
                "stage": line["stage"],
                "before": line["clock_start"] - previous_end,
                "startup": line["startup_s"],
                "work": line.get("work_s") or 0.0,
                "exit": exit_s,
                "total": line["total_s"],
                "overhead": line["startup_s"] + exit_s,
            }
        )
        previous_end = line["clock_start"] + line["total_s"]
    rows.append(
        {"stage": "(after the last)", "before": launched + wall - previous_end}
    )  # DVC's final caching and exit
    return rows


def format_table(headers: list[str], rows: list[list]) -> str:
    """A plain-text table: text left-aligned, numbers right-aligned to one decimal, None blank."""
    cells = [
        [
            "" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)
            for value in row
        ]
        for row in rows
    ]
    widths = [max(len(row[i]) for row in [headers, *cells]) for i in range(len(headers))]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]

    def line(row):
        return "  ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(row, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "not met"


def export_check_seconds(report_json: Path) -> dict[str, float]:
    """Seconds each artifact's check ran (``check_seconds`` in the export report), by artifact."""
    artifacts = json.loads(report_json.read_text()).get("artifacts", {})
    return {
        name: check["check_seconds"]
        for name, check in artifacts.items()
        if check.get("check_seconds") is not None
    }


def report(name: str, args, config, graph: dict, plain: dict) -> None:
    """Print one dataset's comparison."""
    export = config.export
    exports = [
        "SavedModel",
        "TFLite " + "/".join(["float32", *(v for v in export.tflite if v != "float32")]),
    ]
    exports += ["TF.js"] if export.tfjs else []
    print()
    print(
        f"pipeline vs plain Keras: {name}, model={config.model.name}, epochs={config.train.epochs}, "
        f"batch={config.train.batch_size}, exports ({args.exports}): {', '.join(exports)}; "
        f"{os.cpu_count()} CPU cores; ran first: graph"
    )
    print(
        format_table(
            ["side", "wall s", "test accuracy", "epochs run"],
            [
                ["graph (dvc repro)", graph["wall"], f"{graph['accuracy']:.3f}", graph["epochs"]],
                ["plain Keras script", plain["wall"], f"{plain['accuracy']:.3f}", plain["epochs"]],
            ],
        )
    )
    ratio = graph["wall"] / plain["wall"]
    target = TARGETS[name]
    applies = "" if args.exports == "default" else " (the target is for --exports default)"
    print(
        f"ratio graph / plain: {ratio:.2f}x (target <= {target}x: {verdict(ratio, target)}){applies}"
    )
    for side, run in (("graph", graph), ("plain", plain)):
        if abs(run["clock_jump"]) >= 1:  # times are on the boot clock, which does not jump
            print(
                f"note: during the {side} run the wall clock moved {run['clock_jump']:+.1f} s beyond "
                "the boot clock (the machine was paused or its clock stepped); not counted above"
            )

    rows = stage_rows(graph["timings"], graph["launched"], graph["wall"])
    stages = [row for row in rows if "total" in row]
    print()
    print(
        "graph per stage (before: DVC's share since the previous stage process ended; start-up: "
        "process start to the library call; exit: after it, to the process's end):"
    )
    table = [
        [
            row["stage"],
            row["before"],
            row.get("startup"),
            row.get("work"),
            row.get("exit"),
            row.get("total"),
            f"{row['overhead']:.1f} ({verdict(row['overhead'], STAGE_OVERHEAD_TARGET_S)})"
            if "overhead" in row
            else "",
        ]
        for row in rows
    ]
    stage_total = sum(row["total"] for row in stages)
    table.append(
        [
            "sum",
            sum(row["before"] for row in rows),
            sum(row["startup"] for row in stages),
            sum(row["work"] for row in stages),
            sum(row["exit"] for row in stages),
            stage_total,
            f"{sum(row['overhead'] for row in stages):.1f}",
        ]
    )
    headers = ["stage", "before s", "start-up s", "work s", "exit s", "total s"]
    print(format_table([*headers, f"start-up + exit s (<= {STAGE_OVERHEAD_TARGET_S:.0f})"], table))
    untimed = [stage for stage in graph["ran"] if stage not in {row["stage"] for row in stages}]
    print(
        f"dvc's own overhead (graph wall - stage totals): {graph['wall'] - stage_total:.1f} s"
        + (f", including stages that wrote no timings: {', '.join(untimed)}" if untimed else "")
    )
    checks = graph.get("export_checks") or {}
    train_work = next((row["work"] for row in stages if row["stage"] == "train"), None)
    if checks and train_work:
        spent = sum(checks.values())
        share = spent / train_work
        print(
            f"export verification (every artifact on the whole test split, plus its latency runs): "
            f"{spent:.1f} s = {share:.0%} of the train stage's work "
            f"(target <= {EXPORT_CHECK_SHARE_TARGET:.0%}: {verdict(share, EXPORT_CHECK_SHARE_TARGET)}); "
            + ", ".join(f"{artifact} {seconds:.1f}" for artifact, seconds in checks.items())
        )

    stamps, launched = plain["stamps"], plain["launched"]
    steps = [
        ("start-up (interpreter, imports)", launched, stamps["imports"]),
        ("load and split the data", stamps["imports"], stamps["data"]),
        ("define, compile, fit", stamps["data"], stamps["fit"]),
        ("evaluate, predict", stamps["fit"], stamps["evaluate"]),
        ("exports", stamps["evaluate"], stamps["export"]),
        ("exit", stamps["export"], launched + plain["wall"]),
    ]
    print()
    print("plain script per step:")
    print(format_table(["step", "s"], [[step, end - start] for step, start, end in steps]))


def bench_dataset(name: str, args, root: Path) -> None:
    """Copy, configure, run the graph then the plain script, print the comparison."""
    from stages._config import compose_conf, to_settings

    data, path, epochs, batch_size = DATASETS[name]
    if path is not None and not path.is_dir():
        print(
            f"\n{name}: skipped: {path} not found (Debian's dataset-fashion-mnist package installs it)"
        )
        return
    workdir = root / name
    print(f"{name}: copying the working tree to {workdir / 'repo'} ...", flush=True)
    copy = copy_repository(REPO, workdir / "repo")
    epochs = args.epochs if args.epochs is not None else epochs
    batch_size = args.batch_size if args.batch_size is not None else batch_size
    select_preset(copy, preset_yaml(data, path, epochs, batch_size, args.exports))
    config = to_settings(compose_conf([], config_dir=copy / "conf"))
    config_file = workdir / "config.pickle"
    config_file.write_bytes(pickle.dumps(config))

    print(f"{name}: graph (dvc repro, every stage) ...", flush=True)
    timings = workdir / "timings.jsonl"
    graph = run_graph(copy, timings, workdir / "dvc.log")
    ran = re.findall(r"Running stage '(\w+)'", (workdir / "dvc.log").read_text())
    graph |= {
        "ran": ran,
        "timings": read_timings(timings, ran),
        "accuracy": json.loads((copy / "reports" / "metrics.json").read_text())["accuracy"],
        "epochs": len(json.loads((copy / "models" / "history.json").read_text())["epochs"]),
        "export_checks": export_check_seconds(copy / "exports" / "report.json"),
    }
    print(f"{name}: plain Keras script ...", flush=True)
    plain = plain_process(config_file, workdir / "plain", workdir / "plain.log")
    plain |= json.loads((workdir / "plain" / "result.json").read_text())
    report(name, args, config, graph, plain)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.plain:
        run_plain(Path(args.plain[0]), Path(args.plain[1]))
        return
    names = list(DATASETS) if args.dataset == "both" else [args.dataset]
    root = Path(tempfile.mkdtemp(prefix="pipeline-vs-plain-"))
    try:
        for name in names:
            bench_dataset(name, args, root)
    finally:
        if args.keep:
            print(f"\nkept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
