"""Subprocess helpers: free ports, watched output with a watchdog, killing a whole session (Ray's agents)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)


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
