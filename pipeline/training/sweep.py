"""Sweep bookkeeping: the objective a trial returns, one record per trial, and the summary table.

A multirun trial (``python -m stages.train -m ...``) writes ``trial.json`` and ``config.yaml`` into
``<sweep.dir>/<sweep.name>/<trial number>/``; :func:`write_summary` turns those records into
``summary.csv``, ``summary.md`` (sorted by the objective, failed trials last), ``best.yaml`` (the best
trial's full composed config) and ``best.json`` (the commands that rerun it).
"""

from __future__ import annotations

import csv
import logging
import math
import shlex
import shutil
from pathlib import Path

from pipeline.errors import UserError
from pipeline.io import read_json, write_json

logger = logging.getLogger(__name__)

TRIAL_FILE = "trial.json"
CONFIG_FILE = "config.yaml"
STATE_FILE = "sweep.json"
# Keys a sweep rewrites per trial (or that select the sweep itself): never part of a rerun command.
SWEEP_OWNED_KEYS = (
    "paths.",
    "train.tensorboard_dir",
    "train.run_name",
    "cluster.storage_dir",
    "sweep.",
    "hparams_search",
    "hydra.",
    "hydra/",
)


def objective_value(metrics: dict, name: str) -> float:
    """``metrics[name]`` as a float.

    Raises:
        UserError: the metric is missing, listing the ones the run produced.
    """
    if name not in metrics:
        shown = ", ".join(sorted(key for key in metrics if key != "epochs"))
        raise UserError(
            f"sweep.objective={name!r} is not a metric of this run: choose one of {shown}"
        )
    return float(metrics[name])


def first_trial_number(sweep_dir: Path) -> int:
    """The number the next sweep run's first trial gets: one past every trial folder already there."""
    numbers = [
        int(path.name)
        for path in Path(sweep_dir).glob("*")
        if path.is_dir() and path.name.isdigit()
    ]
    return max(numbers) + 1 if numbers else 0


def start_sweep(sweep_dir: Path, direction: str = "minimize") -> int:
    """Record where this sweep run's trial numbers start (trials of earlier runs are kept) and its direction."""
    first = first_trial_number(sweep_dir)
    write_json(Path(sweep_dir) / STATE_FILE, {"first_trial": first, "direction": direction})
    return first


def trial_number(sweep_dir: Path, job_number: int) -> int:
    """Folder number of the sweep run's ``job_number``-th job (see :func:`start_sweep`)."""
    state = Path(sweep_dir) / STATE_FILE
    return (read_json(state)["first_trial"] if state.is_file() else 0) + job_number


def write_trial(trial_dir: Path, record: dict) -> None:
    """Write one trial's record (status, overrides, objective, metrics or error)."""
    write_json(Path(trial_dir) / TRIAL_FILE, record)


def load_trials(sweep_dir: Path) -> list[dict]:
    """Every trial record under ``sweep_dir``, in trial-number order."""
    records = [read_json(path) for path in Path(sweep_dir).glob(f"*/{TRIAL_FILE}")]
    return sorted(records, key=lambda record: record["trial"])


def sort_trials(trials: list[dict], direction: str) -> list[dict]:
    """Completed trials best first by their objective, then failed ones in trial order."""

    def key(record):
        value = record.get("objective")
        usable = record.get("status") == "completed" and value is not None and not math.isnan(value)
        return (0, value if direction == "minimize" else -value) if usable else (1, record["trial"])

    return sorted(trials, key=key)


def rerun_overrides(overrides: list[str], choices: dict[str, str] | None = None) -> list[str]:
    """A trial's overrides minus those the sweep owns (paths, names, the preset), after its group choices.

    ``choices`` (config group -> option the trial composed) pins groups a preset swapped, e.g. the
    ``model=mlp`` that ``hparams_search=mlp_optuna`` selects, so the rerun composes the same config.
    """
    kept = [item for item in overrides if not item.lstrip("+~").startswith(SWEEP_OWNED_KEYS)]
    named = {item.split("=", 1)[0] for item in kept}
    pinned = [
        f"{group}={option}"
        for group, option in (choices or {}).items()
        if option is not None and group not in named and not group.startswith(SWEEP_OWNED_KEYS)
    ]
    return pinned + kept


def rerun_commands(overrides: list[str], choices: dict[str, str] | None = None) -> dict[str, str]:
    """Commands that rerun a trial as a DVC experiment and as a direct stage run."""
    kept = rerun_overrides(overrides, choices)
    return {
        "dvc": " ".join(["dvc exp run", *(f"-S {shlex.quote(item)}" for item in kept)]),
        "train": " ".join(["python -m stages.train", *(shlex.quote(item) for item in kept)]),
    }


def _row(record: dict, objective: str) -> dict:
    value = record.get("objective")
    return {
        "trial": record["trial"],
        "status": record["status"],
        objective: "" if value is None else f"{value:.6g}",
        "overrides": " ".join(rerun_overrides(record.get("overrides", []))),
        "error": record.get("error", ""),
    }


def write_summary(sweep_dir: Path, objective: str, direction: str) -> dict | None:
    """Write ``summary.csv``/``summary.md`` for every trial and ``best.yaml``/``best.json`` for the best.

    Returns:
        The best completed trial's record, or ``None`` when no trial completed.
    """
    sweep_dir = Path(sweep_dir)
    trials = sort_trials(load_trials(sweep_dir), direction)
    rows = [_row(record, objective) for record in trials]
    columns = ["trial", "status", objective, "overrides", "error"]
    with open(sweep_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"| {' | '.join(columns)} |", f"|{'---|' * len(columns)}"]
    lines += [f"| {' | '.join(str(row[c]).replace('|', '/') for c in columns)} |" for row in rows]
    best = trials[0] if trials and trials[0]["status"] == "completed" else None
    header = f"# Sweep {sweep_dir.name}: {len(trials)} trials, {direction} {objective}\n\n"
    if best is not None:
        commands = rerun_commands(best.get("overrides", []), best.get("choices"))
        shutil.copy2(sweep_dir / str(best["trial"]) / CONFIG_FILE, sweep_dir / "best.yaml")
        write_json(
            sweep_dir / "best.json",
            {
                "trial": best["trial"],
                "objective": objective,
                "direction": direction,
                "value": best["objective"],
                "overrides": rerun_overrides(best.get("overrides", []), best.get("choices")),
                "commands": commands,
            },
        )
        header += f"Best: trial {best['trial']} ({objective} {best['objective']:.6g}); rerun: `{commands['dvc']}`\n\n"
    (sweep_dir / "summary.md").write_text(header + "\n".join(lines) + "\n")
    logger.info(
        "Sweep summary: %s (%d trials, %d failed)",
        sweep_dir / "summary.md",
        len(trials),
        sum(record["status"] != "completed" for record in trials),
    )
    return best


def queue_commands(
    sweep_dir: Path, top: int | None = None, target: str | None = None
) -> list[list[str]]:
    """``dvc exp run --queue`` argument lists that turn a sweep's completed trials into DVC experiments.

    Args:
        top: only the ``top`` best trials (all completed ones when ``None``).
        target: a ``dvc.yaml`` stage to stop at (e.g. ``evaluate``); the whole graph when ``None``.

    Returns:
        One argument list per trial, best first, each named ``<sweep>-trial-<n>``.

    Raises:
        UserError: the folder holds no trial records or no completed trial.
    """
    sweep_dir = Path(sweep_dir)
    records = load_trials(sweep_dir)
    if not records:
        raise UserError(
            f"{sweep_dir} holds no trials (*/{TRIAL_FILE}): pass the folder of a finished sweep, e.g. sweeps/<sweep.name>"
        )
    state = sweep_dir / STATE_FILE
    direction = read_json(state).get("direction", "minimize") if state.is_file() else "minimize"
    completed = [
        record for record in sort_trials(records, direction) if record["status"] == "completed"
    ]
    if not completed:
        raise UserError(
            f"{sweep_dir}: none of its {len(records)} trials completed; nothing to queue"
        )
    commands = []
    for record in completed[:top]:
        command = [
            "dvc",
            "exp",
            "run",
            "--queue",
            "-n",
            f"{sweep_dir.name}-trial-{record['trial']}",
        ]
        for item in rerun_overrides(record.get("overrides", []), record.get("choices")):
            command += ["-S", item]
        commands.append(command + ([target] if target else []))
    return commands
