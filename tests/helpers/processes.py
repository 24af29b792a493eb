"""Subprocess helpers: free ports, watched output with a watchdog, killing a whole session (Ray's agents)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)

REPO = Path(__file__).resolve().parents[2]


def start_stage(*overrides: str, stage: str = "train") -> subprocess.Popen:
    """``python -m stages.<stage> overrides`` in its own session (so it can be killed whole), its
    stdout and stderr one unbuffered text stream."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", f"stages.{stage}", *overrides],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def free_port() -> int:
    """A TCP port nothing listens on once this returns."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_line(path: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"ray start failed; see {path}:\n{path.read_text()[-2000:] if path.exists() else ''}"
            )
        time.sleep(0.2)


def watched_lines(process: subprocess.Popen, timeout: float):
    """``process.stdout`` line by line; once ``timeout`` seconds have passed the process (with its session, when it
    leads one) is killed, so its output ends and a hung run fails its test instead of hanging the suite."""

    def kill() -> None:
        try:
            leads_session = os.getsid(process.pid) == process.pid
        except ProcessLookupError:
            return
        _kill_session(process) if leads_session else process.kill()

    watchdog = threading.Timer(timeout, kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield from process.stdout
    finally:
        watchdog.cancel()


def _kill_session(process: subprocess.Popen) -> None:
    """SIGKILL the process group we started and anything left in its session (Ray's agents)."""
    sid = process.pid
    try:
        os.killpg(sid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    process.wait(timeout=30)


def dvc(repo: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``dvc args`` in ``repo`` with this environment's dvc, asserting it succeeded."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    env.pop("DVC_EXP_NAME", None)
    dvc_bin = Path(sys.executable).with_name("dvc")
    result = subprocess.run(
        [str(dvc_bin), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def experiments_by_name(repo: Path) -> dict[str, tuple[dict, dict]]:
    """``dvc exp show``'s experiments as ``{name: (params.yaml content, reports/metrics.json content)}``."""
    found = {}
    for baseline in json.loads(dvc(repo, "exp", "show", "--json").stdout):
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                metrics = data.get("metrics", {}).get("reports/metrics.json", {}).get("data", {})
                found[rev.get("name") or exp.get("name")] = (params, metrics)
    return found


def start_ray_node(log: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``ray start --block *args`` in its own session (so :func:`_kill_session` stops it and only it,
    never every Ray on the machine as ``ray stop`` would), once its log says the runtime started.

    ``env``: the node's environment (default: this one, with the repository on ``PYTHONPATH``)."""
    if env is None:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--block",
            "--num-gpus=0",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
            *args,
        ],
        env={**env, "RAY_USAGE_STATS_ENABLED": "0"},
        start_new_session=True,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_line(log, "Ray runtime started", process, timeout=120)
    except RuntimeError:
        _kill_session(process)
        raise
    return process
