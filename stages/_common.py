"""What every stage shares: the Hydra app around one library call, ``--params`` runs and one-line user errors.

Composition and validation live in :mod:`stages._config`; sweep trials in :mod:`stages._sweep`.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
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
    """
    import hydra

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
        if "-v" in sys.argv[1:]:
            sys.argv.remove("-v")
            os.environ[VERBOSE_ENV] = "1"
            os.environ.update(VERBOSE_OVERRIDES)
        if PARAMS_FLAG in sys.argv[1:]:
            run_from_params(task, sys.argv[1:])
            return
        try:
            precheck_overrides(sys.argv[1:])
        except UserError as error:
            report_user_error(error)
        hydra_entry()

    return main
