"""What every stage shares: the Hydra app around one library call, ``--params`` runs, one-line user errors
and, with ``KP_STAGE_TIMINGS`` set, each stage process's timings.

Composition and validation live in :mod:`stages._config`; sweep trials in :mod:`stages._sweep`.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pipeline  # noqa: F401  (sets the Keras flavour before anything imports TensorFlow)
from pipeline.env import VERBOSE_ENV, VERBOSE_OVERRIDES
from pipeline.errors import UserError
from pipeline.settings import PipelineConfig
from stages._config import (
    CONF_DIR,
    PARAMS_FLAG,
    check_params_fresh,
    in_multirun,
    load_params,
    precheck_overrides,
    report_user_error,
    setup_logging,
    to_settings,
)

logger = logging.getLogger("stages")

TIMINGS_ENV = "KP_STAGE_TIMINGS"  # a file: each stage process appends one JSON line of its timings


def clock() -> float:
    """Seconds on the boot clock (Linux's ``CLOCK_BOOTTIME``; elsewhere the wall clock).

    The clock ``/proc/<pid>/stat`` counts start times on, shared by every process of the machine
    and never stepped: on this project's VM the wall clock once moved 22 s beyond it within one
    stage (a paused VM or a stepped clock), so no duration here mixes the two.
    """
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.time() if boottime is None else time.clock_gettime(boottime)


def process_start_clock() -> float:
    """When this process started, on :func:`clock`, to a clock tick (10 ms)."""
    if hasattr(time, "CLOCK_BOOTTIME"):
        try:
            with open("/proc/self/stat", encoding="ascii") as file:
                ticks = int(file.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
            return ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    import psutil  # its create_time on Linux adds a boot time rounded down to the second

    return psutil.Process().create_time() - time.time() + clock()


class StageTimer:
    """One JSON line per stage process, appended to the file ``KP_STAGE_TIMINGS`` names as it ends.

    ``startup_s`` runs from the process's start to the library call (interpreter start, imports,
    config composition), ``work_s`` is the library call (every trial's, summed, under ``-m``),
    ``exit_s`` from its end to the process's end (atexit hooks, interpreter teardown),
    ``total_s`` from the process's start to its end. Every duration is on the boot
    clock (:func:`clock`); ``process_start`` is the start in epoch seconds and ``clock_start`` on
    the boot clock, which orders the stage processes of one machine. ``bench/pipeline_vs_plain.py``
    reads the file.
    """

    def __init__(self, stage: str, path: Path) -> None:
        self.stage, self.path = stage, path
        self.clock_start = process_start_clock()
        self.process_start = time.time() - (clock() - self.clock_start)
        self.work_started: float | None = None  # on clock()
        self.work_ended: float | None = None
        self.work_s = 0.0

    @classmethod
    def from_env(cls, task: Callable) -> StageTimer | None:
        """A timer for ``task``'s stage when ``KP_STAGE_TIMINGS`` is set, else None (no cost)."""
        path = os.environ.get(TIMINGS_ENV)
        if not path:
            return None
        module = task.__module__
        if module == "__main__":  # python -m stages.<name>
            spec = getattr(sys.modules["__main__"], "__spec__", None)
            module = spec.name if spec else Path(sys.argv[0]).stem
        return cls(module.rsplit(".", 1)[-1], Path(path).resolve())

    def wrap(self, task: Callable[..., object]) -> Callable[..., object]:
        """``task`` timed as this stage's work (the library call: ``task(config)`` for most stages,
        :func:`stages.compose.compose` for the compose stage)."""

        @functools.wraps(task)
        def timed(*args, **kwargs) -> object:
            started = clock()
            self.work_started = self.work_started or started
            try:
                return task(*args, **kwargs)
            finally:
                self.work_ended = clock()
                self.work_s += self.work_ended - started

        return timed

    def record(self) -> dict:
        """This process's timings so far, in seconds."""
        now = clock()
        started = self.work_started or now
        return {
            "stage": self.stage,
            "process_start": round(self.process_start, 3),
            "clock_start": round(self.clock_start, 3),
            "startup_s": round(started - self.clock_start, 3),
            "work_s": round(self.work_s, 3) if self.work_started else None,
            "exit_s": round(now - self.work_ended, 3) if self.work_ended else None,
            "total_s": round(now - self.clock_start, 3),
        }

    def write(self) -> None:
        """Append the line once this process has gone, so ``exit_s`` includes the interpreter's
        teardown after the atexit hooks (seconds with TensorFlow loaded): a small detached watcher
        process sees it go. Where none can watch (no ``/proc``), append it now."""
        line, now = self.record(), clock()
        if hasattr(time, "CLOCK_BOOTTIME") and Path(f"/proc/{os.getpid()}/stat").exists():
            import subprocess

            arguments = [str(os.getpid()), str(self.path), json.dumps(line), repr(now)]
            try:
                subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _EXIT_WATCHER, *arguments],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,  # outlives this process; nobody waits for it
                )
                return
            except OSError:
                pass
        with self.path.open("a", encoding="utf-8") as file:  # one short append per process
            file.write(json.dumps(line) + "\n")


# Run by StageTimer.write as `python -I -S -c` (a start of ~20 ms): waits for the stage process
# (argv 1) to end or turn zombie, adds the time since its atexit hook (argv 4, on the boot clock)
# to exit_s and total_s of its line (argv 3) and appends the line to the file (argv 2).
_EXIT_WATCHER = """
import json, sys, time
pid, path, line, at_exit = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
def running():
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
while running():
    time.sleep(0.005)
teardown = time.clock_gettime(time.CLOCK_BOOTTIME) - at_exit
for key in ("exit_s", "total_s"):
    if line[key] is not None:
        line[key] = round(line[key] + teardown, 3)
with open(path, "a", encoding="utf-8") as file:
    file.write(json.dumps(line) + "\\n")
"""


def run_from_params(task: Callable[[PipelineConfig], object], argv: list[str]) -> object:
    """``--params params.yaml``: run on the composed file DVC tracks (how ``dvc.yaml`` calls stages).

    No Hydra composition happens here: the file is the config. It must agree with ``conf/``
    unless DVC composed it for an experiment (see :func:`check_params_fresh`).
    """
    setup_logging()
    position = argv.index(PARAMS_FLAG)
    if position + 1 >= len(argv) or len(argv) > 2:
        report_user_error(
            UserError(
                f"usage: python -m stages.<name> {PARAMS_FLAG} params.yaml (no overrides: edit conf/ "
                "or use `dvc exp run -S key=value`)"
            )
        )
    path = Path(argv[position + 1])
    try:
        cfg = load_params(path)
        check_params_fresh(path, cfg)
        config = to_settings(cfg)
        _log_config(config)
        return task(config)
    except UserError as error:
        report_user_error(error)


def _log_config(config: PipelineConfig) -> None:
    logger.info(
        "Config: data=%s model=%s epochs=%d batch=%d workers=%d",
        config.data.name,
        config.model.name,
        config.train.epochs,
        config.train.batch_size,
        config.cluster.num_workers,
    )


def stage_main(
    task: Callable[[PipelineConfig], object], sweep_trial: Callable | None = None
) -> Callable[[], None]:
    """Wrap ``task(config)`` as a Hydra app over ``conf/`` with one-line user errors.

    ``-v`` anywhere on the command line turns on full library logs. With ``sweep_trial`` (the train
    stage passes :func:`stages._sweep.run_trial`; ``task`` returns its final metrics), every job of
    a multirun runs as ``sweep_trial(task, cfg, to_settings)``: a sweep trial with its own outputs.
    With ``KP_STAGE_TIMINGS`` set, the process appends its timings to that file (:class:`StageTimer`).
    """
    import hydra

    timer = StageTimer.from_env(task)
    if timer is not None:
        task = timer.wrap(task)

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def hydra_entry(cfg) -> object:
        if (
            sweep_trial is not None and in_multirun()
        ):  # -m: own outputs per trial, failures recorded, the objective returned
            return sweep_trial(task, cfg, to_settings)
        try:
            config = to_settings(cfg)
            _log_config(config)
            return task(config)
        except UserError as error:
            report_user_error(error)

    @functools.wraps(task)
    def main() -> None:
        if timer is not None:
            atexit.register(timer.write)
        if "-v" in sys.argv[1:]:
            sys.argv.remove("-v")
            os.environ[VERBOSE_ENV] = "1"
            os.environ.update(VERBOSE_OVERRIDES)
        if PARAMS_FLAG in sys.argv[1:]:
            run_from_params(task, sys.argv[1:])
            return
        try:
            composed = precheck_overrides(sys.argv[1:])
        except UserError as error:
            report_user_error(error)
        if composed is None:  # a sweep, or a Hydra option (--cfg, --help, hydra.*): Hydra's app
            hydra_entry()
            return
        config, hydra_node = composed
        # What Hydra's app does for a single run with this conf/ (precheck_overrides checked that
        # it does no more), without composing the config twice more: its job logging, the job.
        from hydra.core.utils import configure_log

        configure_log(hydra_node.job_logging, hydra_node.verbose)
        try:
            _log_config(config)
            task(config)
        except UserError as error:
            report_user_error(error)

    return main
