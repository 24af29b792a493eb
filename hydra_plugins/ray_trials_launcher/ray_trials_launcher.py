"""``hydra/launcher=ray_trials``: run up to ``parallel`` sweep trials at once on the local or configured Ray.

Each trial's config is composed on the driver (Hydra's job number included) and shipped to a Ray
task that runs the stage's task function; inside it the train stage starts its own Ray Train run
(``cluster.num_workers`` workers) on the same cluster, so every trial gets its own workers. A local
Ray is started large enough for ``parallel`` trials; on an existing cluster the launcher first
checks that ``parallel`` trials fit and refuses with one line otherwise, before any trial starts.
A trial whose Ray task dies (its process killed, its node lost, an error before the job ran) is
not retried: it is reported to the callbacks as a FAILED job, which records it as a failed trial
(stages/_sweep.py), and the sweep goes on to its summary. Options live in
``conf/hydra/launcher/ray_trials.yaml``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]


def trial_cpus(cluster: DictConfig) -> int:
    """CPUs one trial's Ray Train run reserves: its workers plus one for the Train controller."""
    return int(cluster.num_workers) * int(cluster.cpus_per_worker) + 1


def _run_trial(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    sweep_config: DictConfig,
    singleton_state: Any,
) -> JobReturn:
    """Ray task body: the job runs from the config the driver composed (never re-composed here)."""
    import pipeline  # noqa: F401  (the Keras flavour switch, before anything imports TensorFlow)

    setup_globals()
    Singleton.set_state(singleton_state)
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


class RayTrialsLauncher(Launcher):
    def __init__(self, parallel: int, address: str | None, num_cpus: int | None) -> None:
        self.parallel, self.address, self.num_cpus = int(parallel), address, num_cpus
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _start_ray(self) -> None:
        """Connect to (or start) Ray and check ``parallel`` trials fit; exit 2 with one line if not."""
        import ray

        from pipeline.env import is_verbose, quiet_native_stderr, worker_env_vars
        from pipeline.errors import UserError
        from pipeline.training.ray_logs import install_worker_log_filter
        from stages._config import report_user_error

        need = self.parallel * trial_cpus(self.config.cluster)
        address = self.address or self.config.cluster.address or os.environ.get("RAY_ADDRESS")
        try:
            if self.parallel < 1:
                raise UserError(
                    f"hydra.launcher.parallel={self.parallel} is invalid: expected an integer >= 1"
                )
            if not ray.is_initialized():
                # The trial tasks import this repository's stages/ and this plugin wherever Ray runs them.
                path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
                env_vars = {**worker_env_vars(), "PYTHONPATH": path}
                options = dict(
                    runtime_env={"env_vars": env_vars},
                    include_dashboard=False,
                    logging_level=logging.ERROR,
                )
                local = {} if address else {"num_cpus": self.num_cpus or need, "num_gpus": 0}
                try:
                    with quiet_native_stderr():
                        ray.init(address=address or "local", **local, **options)
                except (ConnectionError, RuntimeError) as error:
                    raise UserError(
                        f"cannot connect to Ray at {address} ({error}): start the cluster or fix "
                        "hydra.launcher.address / cluster.address"
                    ) from None
            if not is_verbose():
                install_worker_log_filter()
            available = int(ray.cluster_resources().get("CPU", 0))
            if need > available:
                where = (
                    f"the Ray cluster at {address}"
                    if address
                    else f"the local Ray (hydra.launcher.num_cpus={self.num_cpus})"
                )
                raise UserError(
                    f"hydra.launcher.parallel={self.parallel} trials need {need} CPUs ({trial_cpus(self.config.cluster)} "
                    f"per trial: cluster.num_workers x cluster.cpus_per_worker + 1) but {where} has {available}: "
                    "lower hydra.launcher.parallel or cluster.num_workers"
                )
        except UserError as error:
            report_user_error(error)  # one line, exit 2, no trial started

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import ray

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        self._start_ray()
        # num_cpus=0: the trial's Ray Train run reserves the CPUs. max_retries=0: the Train run already
        # replaces failed workers (train.max_failures); a rerun trial task would mostly die the same way.
        remote = ray.remote(num_cpus=0, max_retries=0)(_run_trial)
        log.info(f"Launching {len(job_overrides)} trials on Ray, {self.parallel} at a time")
        pending, returns = {}, [None] * len(job_overrides)
        for position, overrides in enumerate(job_overrides):
            while len(pending) >= self.parallel:
                self._collect(pending, returns)
            idx = initial_job_idx + position
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
                sweep_config.hydra.job.num = idx
            ref = remote.remote(
                self.hydra_context, self.task_function, sweep_config, Singleton.get_state()
            )
            pending[ref] = (position, overrides, sweep_config)
        while pending:
            self._collect(pending, returns)
        return returns

    def _collect(self, pending: dict, returns: list) -> None:
        """Wait for one trial; a crashed Ray task becomes a failed trial, not a stopped sweep."""
        import ray

        from stages._sweep import failures_raise

        [ref], _ = ray.wait(list(pending), num_returns=1)
        position, overrides, sweep_config = pending.pop(ref)
        try:
            returns[position] = ray.get(ref)
        except Exception as error:  # the task's process died (killed, out of memory) or it raised before the job ran
            log.error(
                f"Trial with overrides {' '.join(overrides)} crashed: {' '.join(str(error).split())[:300]}"
            )
            failed = JobReturn(
                overrides=list(overrides), status=JobStatus.FAILED, _return_value=error
            )
            self.hydra_context.callbacks.on_job_end(
                config=sweep_config, job_return=failed
            )  # as run_job does for a raising job
            # Hand it to the sweeper as stages/_sweep.run_trial hands a failed trial: raising or NaN.
            returns[position] = (
                failed
                if failures_raise(self.config.hydra)
                else JobReturn(
                    overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=math.nan
                )
            )
