"""Hydra multirun wiring: per-trial outputs, failed trials recorded, the sweep checked and summarised.

A trial's folders come from Hydra's job number, read here on the process that composed the job
(never in Ray Train workers, which get plain settings): ``paths.models``, ``paths.reports`` and
``paths.exports`` move to ``<sweep.dir>/<sweep.name>/<trial number>/``, the TensorBoard run to
``<train.tensorboard_dir>/<sweep.name>/trial-<n>``. The library side (records, summary) is
:mod:`pipeline.training.sweep`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.errors import UserError
from pipeline.settings import PipelineConfig
from pipeline.training.sweep import (
    CONFIG_FILE,
    TRIAL_FILE,
    objective_value,
    start_sweep,
    trial_number,
    write_summary,
    write_trial,
)

logger = logging.getLogger("stages.sweep")


def sweep_dir(cfg) -> Path:
    return Path(cfg.sweep.dir) / cfg.sweep.name


def trial_cfg(cfg: DictConfig, number: int) -> DictConfig:
    """``cfg`` with every output of the run moved to trial ``number``'s own folders."""
    cfg = copy.deepcopy(cfg)
    folder = sweep_dir(cfg) / str(number)
    cfg.paths.models, cfg.paths.reports, cfg.paths.exports = (
        str(folder / name) for name in ("models", "reports", "exports")
    )
    cfg.train.tensorboard_dir = str(Path(cfg.train.tensorboard_dir) / cfg.sweep.name)
    cfg.train.run_name = f"trial-{number}"
    cfg.cluster.storage_dir = str(Path(cfg.cluster.storage_dir) / cfg.sweep.name)
    return cfg


def _one_line(error: BaseException) -> str:
    error = getattr(error, "cause", None) or error  # a Ray task's exception wraps the trial's own
    text = " ".join(str(error).split())
    return text if isinstance(error, UserError) else f"{type(error).__name__}: {text}"


def failures_raise(hydra_cfg: DictConfig) -> bool:
    """Whether a failed trial is handed to the sweeper as an exception (else as NaN).

    The Optuna sweeper records a raising trial as FAIL and, with ``max_failure_rate: 1.0`` in the
    presets, goes on (a NaN return would crash its ``study.tell``); Hydra's basic sweeper ends the
    whole sweep at a raising job, without a summary, so it gets NaN.
    """
    return "optuna" in str(hydra_cfg.sweeper.get("_target_", ""))


def _trial_record(hydra_cfg: DictConfig, number: int) -> dict:
    choices = {
        group: option
        for group, option in hydra_cfg.runtime.choices.items()
        if not group.startswith("hydra")
    }
    return {
        "trial": number,
        "overrides": list(hydra_cfg.overrides.task),
        "choices": choices,
        "status": "failed",
    }


def run_trial(
    task: Callable[[PipelineConfig], Any], cfg: DictConfig, to_settings: Callable
) -> float:
    """Run one sweep trial: own outputs, ``trial.json`` whatever happens, the objective returned.

    A failing trial is recorded as failed and never stops the sweep (see :func:`failures_raise`).
    A trial whose process dies before it can write its record is recorded by
    :meth:`SweepCallback.on_job_end`.
    """
    hydra_cfg = HydraConfig.get()
    number = trial_number(sweep_dir(cfg), int(hydra_cfg.job.num))
    folder = sweep_dir(cfg) / str(number)
    record = {**_trial_record(hydra_cfg, number), "started": time.time()}
    try:
        cfg = trial_cfg(cfg, number)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        config = to_settings(cfg)
        logger.info(
            "Sweep %s trial %d: %s",
            config.sweep.name,
            number,
            " ".join(record["overrides"]) or "(no overrides)",
        )
        metrics = task(config)
        value = objective_value(metrics, config.sweep.objective)
        record.update(status="completed", objective=value, metrics=metrics)
        return value
    except Exception as error:  # any failure of one trial is recorded and the sweep goes on
        record["error"] = _one_line(error)
        logger.error("Sweep trial %d failed: %s", number, record["error"])
        if failures_raise(hydra_cfg):
            raise
        return math.nan
    finally:
        record["finished"] = time.time()
        write_trial(folder, record)


class SweepCallback(Callback):
    """Checks the sweep before any trial starts and writes its summary when all trials are done."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from stages._config import report_user_error, to_settings

        logging.getLogger("alembic").setLevel(
            logging.WARNING
        )  # Optuna's storage logs each migration plugin
        try:
            check_sweep(config, to_settings)
        except UserError as error:
            report_user_error(error)  # one line, exit 2, before any trial starts
        start_sweep(sweep_dir(config), config.sweep.direction)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A failed job that left no ``trial.json`` is recorded as a failed trial: its process died
        (the Ray trials launcher reports such jobs here) or it failed before :func:`run_trial` ran."""
        if job_return.status != JobStatus.FAILED or config.hydra.mode != RunMode.MULTIRUN:
            return  # a single run's failure is its own one-line error, not a sweep trial
        number = trial_number(sweep_dir(config), int(config.hydra.job.num))
        folder = sweep_dir(config) / str(number)
        if (folder / TRIAL_FILE).is_file():
            return  # run_trial recorded it
        record = {
            **_trial_record(config.hydra, number),
            "error": _one_line(job_return._return_value),
            "finished": time.time(),
        }
        folder.mkdir(parents=True, exist_ok=True)
        write_trial(folder, record)
        logger.error("Sweep trial %d failed: %s", number, record["error"])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_summary(sweep_dir(config), config.sweep.objective, config.sweep.direction)


def _job_config(config: DictConfig) -> DictConfig:
    """What a job sees: the composed config without its ``hydra`` node."""
    plain = OmegaConf.to_container(config, resolve=False)
    plain.pop("hydra", None)
    return OmegaConf.create(plain)


def check_sweep(config: DictConfig, to_settings: Callable) -> None:
    """The base config, the search space and the objective's direction, before any trial runs.

    Raises:
        UserError: naming what is wrong (empty or malformed search space, unknown key, bad objective).
    """
    settings = to_settings(_job_config(config))
    sweeper = config.hydra.sweeper
    if "optuna" not in str(sweeper.get("_target_", "")):
        return
    check_search_space(config, sweeper.get("params"))
    if int(sweeper.n_trials) < 1:
        raise UserError(
            f"hparams_search: hydra.sweeper.n_trials={sweeper.n_trials} is invalid: expected an integer >= 1"
        )
    direction = str(sweeper.direction).split(".")[-1].lower()
    if direction != settings.sweep.direction:
        raise UserError(
            f"hparams_search: hydra.sweeper.direction={direction} disagrees with sweep.direction="
            f"{settings.sweep.direction}: set one from the other (direction: ${{sweep.direction}})"
        )


def check_search_space(config: DictConfig, params) -> None:
    """Every search-space entry names an existing key and parses as a Hydra sweep (interval/choice/range)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if not params:
        raise UserError(
            "hparams_search: the search space hydra.sweeper.params is empty: add e.g. "
            "train.learning_rate: tag(log, interval(1e-4, 1e-1))"
        )
    parser = OverridesParser.create()
    for key, value in params.items():
        if OmegaConf.select(config, str(key), default=KeyError) is KeyError:
            raise UserError(
                f"hparams_search: search-space key '{key}' is not in the config: check its spelling against conf/"
            )
        try:
            override = parser.parse_override(f"{key}={value}")
        except HydraException as error:
            raise UserError(
                f"hparams_search: search space '{key}: {value}' is malformed ({' '.join(str(error).split())[:120]}): "
                "use interval(low, high), choice(a, b), range(start, stop, step) or a, b"
            ) from None
        if not override.is_sweep_override():
            raise UserError(
                f"hparams_search: search space '{key}: {value}' is a single value, not a range or choice: "
                "use interval(low, high), choice(a, b), range(...) or a, b"
            )
