"""What every stage shares (stages/_common.py): the per-stage timings ``KP_STAGE_TIMINGS`` turns on."""

from __future__ import annotations

import json
import time

from helpers.config import run_stage, stage_output
from stages._common import TIMINGS_ENV, StageTimer, clock, process_start_clock


def appended_lines(path, count: int, timeout: float = 10) -> list[str]:
    """The file's lines once it has ``count`` (a detached watcher appends a stage's line after it ends)."""
    deadline = time.monotonic() + timeout

    def read() -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    while len(lines := read()) < count and time.monotonic() < deadline:
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


def test_the_compose_stage_appends_its_timings_too(tmp_path, monkeypatch):
    """Compose is a stage of its own (not a stage_main app): its composition is its work."""
    timings = tmp_path / "timings.jsonl"
    monkeypatch.setenv(TIMINGS_ENV, str(timings))

    stage_output(run_stage("compose", "--output", str(tmp_path / "params.yaml"), cwd=tmp_path))

    (line,) = [json.loads(text) for text in appended_lines(timings, 1)]
    assert line["stage"] == "compose"
    assert line["work_s"] > 0 and line["exit_s"] >= 0 and line["startup_s"] > 0
    assert abs(line["startup_s"] + line["work_s"] + line["exit_s"] - line["total_s"]) < 0.01
    assert (tmp_path / "params.yaml").is_file()


def test_a_stage_timer_times_any_call_as_the_stage_s_work(tmp_path, monkeypatch):
    monkeypatch.setenv(TIMINGS_ENV, str(tmp_path / "timings.jsonl"))

    def compose(path, *, strict=False):
        return path, strict

    compose.__module__ = "stages.compose"
    timer = StageTimer.from_env(compose)
    assert timer.wrap(compose)("params.yaml", strict=True) == ("params.yaml", True)
    assert timer.record()["stage"] == "compose" and timer.record()["work_s"] >= 0


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


def test_a_plain_command_line_is_composed_once_and_hydra_options_go_through_hydra():
    """Overrides alone: the precheck's composition is the run's (no two more in Hydra's app), with
    the hydra node's logging settings; a Hydra option, a hydra.* override or a sweep: Hydra's app."""
    from stages._config import precheck_overrides

    config, hydra = precheck_overrides(["model=mlp", "train.epochs=3"])
    assert (config.model.name, config.train.epochs) == ("mlp", 3)
    assert hydra.job_logging.formatters.simple.format == "%(message)s"
    for argv in (
        ["--cfg", "job", "model=mlp"],
        ["hydra.verbose=true"],
        ["-m", "train.epochs=1,2"],
        ["--info", "defaults"],
    ):
        assert precheck_overrides(argv) is None, argv


def test_a_conf_that_asks_hydras_app_for_more_than_a_call_goes_through_it(tmp_path):
    """A copy of conf/ whose hydra node sets an environment variable, a run directory, config
    saving or a callback of its own needs Hydra's app, which does those; conf/ as shipped does not."""
    import shutil

    from stages._config import CONF_DIR, _hydra_run_is_a_plain_call, compose_conf

    def hydra_node(extra: str | None):
        conf = tmp_path / "conf"
        shutil.rmtree(conf, ignore_errors=True)
        shutil.copytree(CONF_DIR, conf)
        if extra:
            (conf / "extra.yaml").write_text("# @package _global_\nhydra:\n" + extra)
            text = (conf / "config.yaml").read_text()
            (conf / "config.yaml").write_text(text.replace("  - _self_", "  - _self_\n  - extra"))
        node = []
        compose_conf([], conf, hydra_node=node)
        return node[0]

    assert _hydra_run_is_a_plain_call(hydra_node(None))
    for extra in (
        "  job:\n    env_set:\n      KP_TEST: '1'\n",
        "  run:\n    dir: runs\n",
        "  output_subdir: .hydra\n",
        "  job:\n    chdir: true\n",
        "  callbacks:\n    mine:\n      _target_: builtins.dict\n",
    ):
        assert not _hydra_run_is_a_plain_call(hydra_node(extra)), extra


def test_a_stage_prints_the_same_on_the_plain_path_as_through_hydras_app(tmp_path):
    """The gate on the same inputs, once with overrides only and once with a hydra.* override
    (Hydra's app): the same lines on stdout, nothing on stderr."""
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "loss": 0.3}))
    args = [f"paths.reports={reports}"]
    plain = stage_output(run_stage("gate", *args))
    through_hydra = stage_output(run_stage("gate", *args, "hydra.job.chdir=false"))
    assert plain == through_hydra and "Gate: blessed" in plain


def test_cfg_job_prints_the_composed_config():
    """What the unknown-key message points to (`--cfg job`) works: Hydra prints the job's config."""
    output = stage_output(run_stage("gate", "--cfg", "job", "model=mlp"))
    assert "name: mlp" in output and "paths:" in output
