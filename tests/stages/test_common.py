"""What every stage shares (stages/_common.py): the per-stage timings ``KP_STAGE_TIMINGS`` turns on."""

from __future__ import annotations

import json
import time

from helpers.config import run_stage, stage_output
from stages._common import TIMINGS_ENV, StageTimer, clock, process_start_clock


def appended_lines(path, count: int, timeout: float = 10) -> list[str]:
    """The file's lines once it has ``count`` (a detached watcher appends a stage's line after it ends)."""
    deadline = time.monotonic() + timeout
    while len(lines := path.read_text().splitlines()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return lines


def test_a_stage_appends_its_timings_when_the_variable_names_a_file(tmp_path, monkeypatch):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "loss": 0.3}))
    timings = tmp_path / "timings.jsonl"
    timings.write_text('{"stage": "earlier"}\n')  # appended to, never overwritten
    monkeypatch.setenv(TIMINGS_ENV, str(timings))
    before, wall_before = clock(), time.time()

    stage_output(run_stage("gate", f"paths.reports={reports}", cwd=tmp_path))

    after, wall_after = clock(), time.time()
    lines = appended_lines(timings, 2)
    assert len(lines) == 2 and json.loads(lines[0]) == {"stage": "earlier"}
    line = json.loads(lines[1])
    assert set(line) == {
        "stage",
        "process_start",
        "clock_start",
        "startup_s",
        "work_s",
        "exit_s",
        "total_s",
    }
    assert line["stage"] == "gate"
    assert before - 0.1 <= line["clock_start"] <= after  # a clock tick is 10 ms
    assert wall_before - 1 <= line["process_start"] <= wall_after
    assert all(line[key] >= 0 for key in ("startup_s", "work_s", "exit_s"))
    assert line["startup_s"] > line["work_s"]  # gate's work is reading one small file
    assert abs(line["startup_s"] + line["work_s"] + line["exit_s"] - line["total_s"]) < 0.01
    assert line["total_s"] <= after - line["clock_start"] + 0.1  # its end, seen by a watcher


def test_timings_are_off_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(TIMINGS_ENV, raising=False)
    assert StageTimer.from_env(test_timings_are_off_without_the_variable) is None


def test_the_timer_sums_the_library_calls_and_names_the_stage_by_module(tmp_path, monkeypatch):
    monkeypatch.setenv(TIMINGS_ENV, str(tmp_path / "timings.jsonl"))

    def task(config):
        time.sleep(0.05)
        return config

    task.__module__ = "stages.train"
    timer = StageTimer.from_env(task)
    timed = timer.wrap(task)
    assert timed(1) == 1 and timed(2) == 2  # a multirun calls it once per trial
    line = timer.record()  # what write() appends once the process has ended
    assert line["stage"] == "train"
    assert 0.1 <= line["work_s"] < line["total_s"]
    assert abs(line["clock_start"] - process_start_clock()) < 0.02
