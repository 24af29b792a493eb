"""DVC stage `compose`: keep ``params.yaml`` equal to what Hydra composes from ``conf/``.

``conf/`` is the only place defaults live; ``params.yaml`` is its composed, resolved form, which
DVC reads to decide (per key) which stages a change touches. DVC composes it itself only under
``dvc exp run`` (``hydra.enabled`` in ``.dvc/config``, treeverse/dvc#10750), so ``dvc repro``
runs this stage first:

* under ``dvc exp run`` (``DVC_EXP_NAME`` is set) DVC has just composed ``conf/`` plus the
  ``-S`` overrides: the file is kept and the overridden keys are logged;
* otherwise the file is rewritten when it differs from ``conf/``, naming every key that changed.

The other stages refuse a ``params.yaml`` that disagrees with ``conf/`` outside an experiment
(see :func:`stages._common.check_params_fresh`), so a stale composed config is never used silently.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
from pathlib import Path

from pipeline.errors import UserError
from stages._common import StageTimer
from stages._config import (
    PARAMS_FILE,
    compose_conf,
    config_differences,
    load_params,
    report_user_error,
    setup_logging,
    to_settings,
)

logger = logging.getLogger("stages.compose")

HEADER = "# Generated from conf/ by `python -m stages.compose` (the first stage of `dvc repro`). Edit conf/, not this file.\n"


def write_params(path: Path, cfg) -> None:
    """Write the composed config as YAML atomically."""
    from omegaconf import OmegaConf

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(HEADER + OmegaConf.to_yaml(cfg), encoding="utf-8")
    os.replace(tmp, path)


def compose(params_path: Path) -> list[str]:
    """Bring ``params_path`` in line with ``conf/``; return the keys that differed."""
    cfg = compose_conf([])
    to_settings(cfg)  # a bad value in conf/ fails here, naming the key, before any stage runs
    in_experiment = os.environ.get("DVC_EXP_NAME")
    if not params_path.exists():
        write_params(params_path, cfg)
        logger.info("Composed conf/ into %s", params_path)
        return []
    differences = config_differences(load_params(params_path), cfg)
    if in_experiment:
        if differences:
            logger.info(
                "Experiment %s overrides conf/ at: %s", in_experiment, ", ".join(differences)
            )
        else:
            logger.info("Experiment %s runs conf/ unchanged", in_experiment)
        return differences
    if differences:
        write_params(params_path, cfg)
        logger.info("Recomposed %s from conf/; changed: %s", params_path, ", ".join(differences))
    else:
        logger.info("%s is up to date with conf/", params_path)
    return differences


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Experiment with overrides through `dvc exp run -S key=value`, "
        "or run a stage directly: python -m stages.train model=mlp",
    )
    parser.add_argument(
        "--output", default=PARAMS_FILE, help="composed file to write (default: %(default)s)"
    )
    args = parser.parse_args()
    setup_logging()
    run = compose
    timer = StageTimer.from_env(compose)  # KP_STAGE_TIMINGS, as in stages/_common.py's stage_main
    if timer is not None:
        atexit.register(timer.write)
        run = timer.wrap(compose)  # the compose stage's work is the composition
    try:
        run(Path(args.output))
    except UserError as error:
        report_user_error(error)


if __name__ == "__main__":
    main()
    sys.exit(0)
