"""Configs as the stages see them: ``conf/`` composed and validated, outputs redirected under a test's tmp_path, stages run as subprocesses."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from pipeline.settings import PipelineConfig

REPO = Path(__file__).resolve().parents[2]


def compose(*overrides: str) -> PipelineConfig:
    """``conf/`` composed with ``overrides`` and validated, as a stage would see it."""
    from stages._config import compose_conf, to_settings

    return to_settings(compose_conf(list(overrides)))


def tmp_paths(tmp_path: Path) -> list[str]:
    """Overrides that send every stage output (and Ray/TensorBoard logs) under ``tmp_path``."""
    return [
        f"paths.raw={tmp_path}/raw",
        f"paths.processed={tmp_path}/processed",
        f"paths.models={tmp_path}/models",
        f"paths.reports={tmp_path}/reports",
        f"paths.exports={tmp_path}/exports",
        f"train.tensorboard_dir={tmp_path}/tensorboard",
        f"cluster.storage_dir={tmp_path}/ray",
    ]


@functools.lru_cache
def _composed_data(name: str):
    return compose(f"data={name}").data


def data_settings(name: str, **overrides):
    """``conf/data/<name>.yaml`` as composed (once per name: Hydra is slow), with ``data.<key>`` overrides."""
    return dataclasses.replace(
        _composed_data(name),
        **{
            key: str(value) if isinstance(value, Path) else value
            for key, value in overrides.items()
        },
    )


def run_stage(
    name: str, *args: str, cwd: Path = REPO, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``python -m stages.<name> args`` the way a user (or dvc.yaml) does."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", f"stages.{name}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# TensorFlow's native start-up notes and CUDA probing: no stage prints them unless run with -v.
NATIVE_NOISE = re.compile(
    r"absl::InitializeLog|Unable to register cu(DNN|BLAS|FFT)|computation placer already registered"
    r"|Could not find cuda|cuInit|oneDNN custom operations|cuda_(dnn|blas|fft)\.cc"
    r"|^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w/.]+:\d+\]"  # absl's native log lines
    r"|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ",  # TensorFlow's own C++ log lines
    re.MULTILINE,
)


def assert_quiet(result: subprocess.CompletedProcess) -> None:
    """No TensorFlow/CUDA native noise in a stage's output (unless it ran with ``-v``)."""
    if "-v" in result.args:
        return
    noise = [
        line for line in (result.stdout + result.stderr).splitlines() if NATIVE_NOISE.search(line)
    ]
    assert not noise, f"{result.args[2:3]} printed native noise: {noise[:3]}"


def stage_output(result: subprocess.CompletedProcess) -> str:
    """A finished stage's stdout, asserting it succeeded (its stderr tail otherwise) and printed no
    native noise."""
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet(result)
    return result.stdout


def assert_one_line_error(result, *fragments: str) -> str:
    """A stage that failed with one ``error: ...`` line on stderr holding every fragment; returns the line."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def load_script(path: Path):
    """A script that is not a package module (``bench/*.py``) imported from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_help(path: Path) -> str:
    """``python <path> --help``'s output, asserting it exits 0."""
    result = subprocess.run(
        [sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
