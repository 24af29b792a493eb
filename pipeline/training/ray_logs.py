"""Filter what Ray forwards from its workers to the driver's terminal.

Ray workers import ``ray`` before TensorFlow, so TensorFlow's C++ start-up noise (CUDA factory
registration, absl pre-init warnings) escapes ``TF_CPP_MIN_LOG_LEVEL`` there; Ray Train also logs
every report and checkpoint. Unless verbose, those lines are dropped; our own progress lines,
warnings and tracebacks pass through.
"""

from __future__ import annotations

import re

NOISE = re.compile(
    r"^\s*("
    r"[EWI]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"  # glog/absl lines from TF/XLA/gRPC C++
    r"|WARNING: All log messages before absl::InitializeLog\(\)"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [EWI] \S+\.cc:\d+\]"  # TF C++ logging
    r"|Reporting training result \d+"
    r"|Checkpoint successfully created"
    r"|Attempting to start training worker group"
    r"|Started training worker group"
    r"|- \(ip=.*\) world_rank="
    r"|\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [EWI] \d+ \d+\] .*(exporter|gcs_server|Set ray log level)"
    r"|.*\[repeated \d+x across cluster\]"
    r"|.*saving_api\.save_model\("
    r"|A run snapshot was found in storage folder"  # our own "Resuming run ..." line says it once
    r"|This snapshot contains a list of checkpoints"
    r"|If you meant to start a brand new training job"
    r")"
)


def is_noise(line: str) -> bool:
    """Whether a forwarded worker line is known start-up or bookkeeping noise."""
    return bool(NOISE.search(line))


def install_worker_log_filter() -> bool:
    """Replace Ray's driver-side printer of worker output with a filtering one.

    Returns:
        ``True`` when installed; ``False`` when this Ray version lacks the hook (then logs pass
        through unfiltered, which is noisy but harmless).
    """
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return False
    dispatcher = getattr(ray_worker, "global_worker_stdstream_dispatcher", None)
    printer = getattr(ray_worker, "print_to_stdstream", None)
    if dispatcher is None or printer is None:
        return False
    ignore_prefix = ray_worker.global_worker.job_logging_config is not None

    def filtered(data: dict) -> None:
        lines = [line for line in data.get("lines", []) if not is_noise(line)]
        if lines:
            printer({**data, "lines": lines}, ignore_prefix=ignore_prefix)

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", filtered)
    return True
