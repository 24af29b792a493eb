"""One worker on this machine without Ray: the train stage's path for a local single-worker run.

Ray Train pays ~15-25 s per run before the first batch on a small machine (Ray's own processes, its
controller, a synchronisation actor, the worker: ``bench/train_overhead.py``), which a one-worker
run on this machine does not need. Here the stage process (which never imports TensorFlow) starts
one child process that runs :func:`~pipeline.training.worker.fit_model` and supervises it the way
Ray Train supervises its workers, with the same files:

* a checkpoint (:func:`~pipeline.training.model_io.save_model`: model, history, callbacks' patience
  counters) every ``train.checkpoint_every`` epochs in ``<storage>/<run name>/checkpoint_<epoch>``,
  the newest ``train.keep_checkpoints`` kept, the latest named in :data:`STATE_FILE`;
* a child that dies (a crash, an out-of-memory kill) is restarted from the latest checkpoint up to
  ``train.max_failures`` times (-1: forever);
* a rerun of a stage that was killed resumes from it (``train.resume``);
* the final model in ``<storage>/<run name>/final``, which the stage copies to ``paths.models``.

A model the train stage checks first (``model=custom``, ``model=backbone``) is checked in the child
before it trains: one TensorFlow import for both, and nothing is written until it passes (the child
reports ``ready`` on a pipe and waits for the stage's ``go``). A user's mistake found there (a bad
builder, an op TFLite cannot run, ``cluster.use_gpu`` on a machine without a GPU) comes back on
that pipe as the stage's one :class:`~pipeline.errors.UserError` line, and is never retried.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import UserError
from pipeline.io import atomic_dir, read_json, write_json
from pipeline.training.model_io import MODEL_FILE

logger = logging.getLogger(__name__)

STATE_FILE = "local_checkpoints.json"  # {"epoch": 3, "latest": "checkpoint_000003"}
FINAL_DIR = "final"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d+)$")
USER_ERROR_EXIT = 2
PARENT_ENV = "KP_TRAIN_PARENT_PID"


def latest_checkpoint(run_dir: Path) -> tuple[int, Path | None]:
    """``(epoch, directory)`` of the newest checkpoint a local run recorded (``(0, None)``: none)."""
    try:
        state = read_json(Path(run_dir) / STATE_FILE)
        directory = Path(run_dir) / state["latest"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return 0, None
    return (int(state["epoch"]), directory) if directory.is_dir() else (0, None)


def write_checkpoint(run_dir: Path, epoch: int, model, history: dict, callbacks, keep: int) -> Path:
    """Save epoch ``epoch``'s checkpoint atomically, record it as the latest, then delete all but
    the ``keep`` newest (the one just written is always kept)."""
    from pipeline.training.model_io import save_model

    run_dir = Path(run_dir)
    name = f"checkpoint_{epoch:06d}"
    with atomic_dir(run_dir / name) as tmp:
        save_model(model, history, tmp, callbacks)
    write_json(run_dir / STATE_FILE, {"epoch": epoch, "latest": name})
    kept = sorted(
        (path for path in run_dir.iterdir() if CHECKPOINT_PATTERN.match(path.name)),
        key=lambda path: int(CHECKPOINT_PATTERN.match(path.name).group(1)),
    )
    for old in kept[: -max(keep, 1)]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return run_dir / name


def _die_with_parent() -> None:
    """In the child: SIGKILL it when the stage process dies (Linux), so a killed stage never leaves
    a trainer writing into the run directory its rerun resumes from."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a killed stage's child finishes on its own
        return
    if str(os.getppid()) != os.environ.get(PARENT_ENV):  # the stage died before prctl
        os._exit(1)


def _child_env() -> dict[str, str]:
    """The stage's environment, its import path (a user's model package the stage imports, tests'
    helpers) and unbuffered output, so the child's log lines interleave with the stage's."""
    from pipeline.env import worker_env_vars

    inherited = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    path = dict.fromkeys(entry for entry in [*sys.path, *inherited] if entry)  # each once, in order
    return {
        **os.environ,
        **worker_env_vars(),
        "PYTHONPATH": os.pathsep.join(path),
        "PYTHONUNBUFFERED": "1",
        PARENT_ENV: str(os.getpid()),
    }


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _run_child(
    spec: dict, check: bool, on_ready: Callable[[], None] | None
) -> tuple[int, str | None]:
    """One child: send it the job, let it train once it is ready (its check passed) and
    ``on_ready`` ran; return its exit code and its one-line user error, if it sent one."""
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.training.local",
            "--status-fd",
            str(write_end),
            *(["--check"] if check else []),
        ],
        env=_child_env(),
        stdin=subprocess.PIPE,
        pass_fds=(write_end,),
        text=True,
    )
    os.close(write_end)
    error = None
    try:
        with os.fdopen(read_end, encoding="utf-8") as status:
            child.stdin.write(json.dumps(spec) + "\n")
            child.stdin.flush()
            for line in status:  # until the child exits (or closes its end)
                kind, _, message = line.rstrip("\n").partition(" ")
                if kind == "ready":
                    if on_ready is not None:
                        on_ready()
                    child.stdin.write("go\n")
                    child.stdin.close()
                elif kind == "error":
                    error = message
        return child.wait(), error
    except BaseException:  # Ctrl-C, a sweep's timeout, on_ready's error: the child goes too
        child.kill()
        child.wait()
        raise
    finally:
        if child.stdin and not child.stdin.closed:
            with contextlib.suppress(OSError):
                child.stdin.close()


def fit_locally(
    job,
    run_dir: Path,
    max_failures: int,
    check: dict | None = None,
    use_gpu: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> Path:
    """Train ``job`` in a child process, restarting it from its latest checkpoint when it dies.

    Nothing is written before the child is ready: it imports TensorFlow, runs the model check
    (``check``) and reports back; then ``on_ready`` runs (the caller prepares the run directory)
    and the child trains.

    Args:
        job: the :class:`~pipeline.training.worker.TrainJob`.
        run_dir: ``<storage>/<run name>``; a checkpoint already there is resumed from.
        max_failures: restarts allowed after a child dies (-1: no limit).
        check: ``allow_select_tf_ops`` and ``tfjs`` of :func:`~pipeline.training.check.check_model`,
            which the first child runs on the job's model before training (``None``: no check).
        use_gpu: refuse to train when TensorFlow sees no GPU (``cluster.use_gpu``).
        on_ready: called once, when the first child is ready to train.

    Returns:
        The directory of the final model (``model.keras``, ``history.json``).

    Raises:
        UserError: the child's one-line error (a model check, ``use_gpu`` without a GPU), or the
            child died more than ``max_failures`` times (a rerun resumes from its checkpoint).
    """
    from pipeline.training.worker import job_to_dict

    run_dir = Path(run_dir)
    spec = {
        "job": job_to_dict(job),
        "check": check,
        "use_gpu": use_gpu,
        "run_dir": str(run_dir),
    }
    failures, ready = 0, on_ready

    def first_ready() -> None:
        nonlocal ready
        if ready is not None:
            ready()
        ready = None
        shutil.rmtree(run_dir / FINAL_DIR, ignore_errors=True)  # a killed attempt's

    while True:
        code, error = _run_child(spec, check is not None and failures == 0, first_ready)
        if error is not None:
            raise UserError(error)
        if code == 0 and (run_dir / FINAL_DIR / MODEL_FILE).is_file():
            return run_dir / FINAL_DIR
        failures += 1
        epoch, _ = latest_checkpoint(run_dir)
        if max_failures != -1 and failures > max_failures:
            raise UserError(
                f"training failed: the training process {_describe_exit(code)} "
                f"({failures} time(s), train.max_failures={max_failures}); its last checkpoint "
                f"(epoch {epoch}) is in {run_dir}: rerun the stage to resume from it"
            )
        logger.warning(
            "The training process %s; restarting it from %s (restart %d of %s)",
            _describe_exit(code),
            f"the checkpoint of epoch {epoch}" if epoch else "the start",
            failures,
            "unlimited" if max_failures == -1 else max_failures,
        )


def _gpu_check() -> None:
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        raise UserError(
            "cluster: cluster.use_gpu=true but TensorFlow sees no GPU on this machine: use "
            "cluster=local (CPU) or run on a machine with a GPU"
        )


def _train_child(spec: dict, check: bool, status) -> None:
    """Check (if asked), report ready, wait for the stage's go, then train from the latest checkpoint."""
    from pipeline.env import import_tensorflow
    from pipeline.training.model_io import save_model
    from pipeline.training.worker import fit_model, job_from_dict

    job = job_from_dict(spec["job"])
    run_dir = Path(spec["run_dir"])
    logger.info("worker 0/1 on this machine pid %d (no Ray: one local worker)", os.getpid())
    if check and spec["check"] is not None:
        from pipeline.training.check import check_model

        check_model(job.model, job.train, Path(job.processed_dir), **spec["check"])
    import_tensorflow()
    if spec["use_gpu"]:
        _gpu_check()
    status.write("ready\n")
    if sys.stdin.readline().strip() != "go":  # the stage went away
        sys.exit(1)
    _, resume_dir = latest_checkpoint(run_dir)

    def report(model, logs, epoch, history, callbacks):
        if (epoch + 1) % job.train.checkpoint_every == 0:
            write_checkpoint(
                run_dir, epoch + 1, model, history, callbacks, job.train.keep_checkpoints
            )

    model, history = fit_model(job, 0, 1, report=report, resume_dir=resume_dir)
    with atomic_dir(run_dir / FINAL_DIR) as tmp:
        save_model(model, history, tmp)


def main(argv: list[str] | None = None) -> None:
    """The child: ``python -m pipeline.training.local --status-fd N [--check]``, the job as one
    JSON line on stdin, then ``go`` once the stage is ready for it to train."""
    import pipeline  # noqa: F401  (the Keras flavour, before anything imports TensorFlow)
    from pipeline.env import configure_process_env

    _die_with_parent()
    configure_process_env()
    parser = argparse.ArgumentParser(
        description="Train one local worker (started by the train stage)"
    )
    parser.add_argument("--status-fd", type=int, required=True, help="where to report to the stage")
    parser.add_argument("--check", action="store_true", help="check the model before training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    with os.fdopen(args.status_fd, "w", buffering=1, encoding="utf-8") as status:
        try:
            _train_child(json.loads(sys.stdin.readline()), args.check, status)
        except UserError as error:
            status.write(f"error {' '.join(str(error).split())}\n")
            sys.exit(USER_ERROR_EXIT)
        except KeyboardInterrupt:
            sys.exit(130)


if __name__ == "__main__":
    main()
