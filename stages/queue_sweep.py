"""Queue a finished sweep's trials as DVC experiments: ``python -m stages.queue_sweep sweeps/<name>``.

Each completed trial (best first) becomes ``dvc exp run --queue -n <sweep>-trial-<n> -S <overrides>``
with the trial's group choices and overrides (not its sweep-owned paths), so ``dvc queue start``
reruns it through the DVC graph and ``dvc exp show`` lists it beside every other experiment.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.errors import UserError
from pipeline.training.sweep import queue_commands
from stages._config import report_user_error, setup_logging

logger = logging.getLogger("stages.queue_sweep")


def dvc_executable() -> str:
    """The ``dvc`` installed beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("dvc")
    return str(beside) if beside.is_file() else (shutil.which("dvc") or "dvc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sweep_dir", type=Path, help="a finished sweep's folder, e.g. sweeps/mlp_optuna"
    )
    parser.add_argument(
        "--top",
        type=int,
        default=None,
        help="queue only the N best trials (default: every completed one)",
    )
    parser.add_argument(
        "--target", default=None, help="stop each experiment at this dvc.yaml stage, e.g. evaluate"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the dvc commands instead of running them"
    )
    args = parser.parse_args()
    setup_logging()
    try:
        commands = queue_commands(args.sweep_dir, args.top, args.target)
    except UserError as error:
        report_user_error(error)
    for command in commands:
        if args.dry_run:
            print(" ".join(command))
            continue
        result = subprocess.run([dvc_executable(), *command[1:]], capture_output=True, text=True)
        if result.returncode != 0:
            report_user_error(
                UserError(f"`{' '.join(command)}` failed: {' '.join(result.stderr.split())[:300]}")
            )
        logger.info("Queued %s", command[command.index("-n") + 1])
    if not args.dry_run:
        logger.info(
            "Queued %d experiment%s: run them with `dvc queue start`, watch `dvc queue status`, compare `dvc exp show`",
            len(commands),
            "" if len(commands) == 1 else "s",
        )


if __name__ == "__main__":
    main()
