"""Where a run trains: start a local Ray or join a cluster, then check it can place the workers.

Every check runs before any Ray Train worker starts and fails with one :class:`UserError` line:
an unreachable ``cluster.address`` (a plain TCP probe with ``cluster.connect_timeout``, because
``ray.init`` retries an unreachable GCS for about a minute), too few CPUs, GPUs, nodes or custom
resources for ``cluster.num_workers`` workers.
"""

from __future__ import annotations

import logging
import os
import socket

from pipeline.errors import UserError
from pipeline.settings import ClusterSettings

logger = logging.getLogger(__name__)

DEFAULT_GCS_PORT = 6379
# A local Ray started for one run: no idle workers started ahead (Ray starts one per CPU, without
# the job's runtime_env, so Ray Train's controller and workers never use them; on a small machine
# they only compete with the start-up that matters: bench/train_overhead.py).
LOCAL_RAY_SYSTEM_CONFIG = {"enable_worker_prestart": False, "prestart_worker_first_driver": False}
RAY_CLIENT_PREFIX = "ray://"


def resolve_address(cluster: ClusterSettings) -> str | None:
    """``cluster.address``, else ``RAY_ADDRESS``, else ``None`` (start a local Ray)."""
    return cluster.address or os.environ.get("RAY_ADDRESS") or None


def check_reachable(address: str, timeout: float) -> None:
    """Open (and close) a TCP connection to ``host:port`` of ``address``; ``auto`` is left to Ray.

    Raises:
        UserError: nothing accepts connections there within ``timeout`` seconds.
    """
    if address in ("auto", "local"):
        return
    target = address[len(RAY_CLIENT_PREFIX) :] if address.startswith(RAY_CLIENT_PREFIX) else address
    host, _, port = target.rpartition(":") if ":" in target else (target, "", str(DEFAULT_GCS_PORT))
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as error:
        raise UserError(
            f"cluster: cannot reach Ray at cluster.address={address} within {timeout:g} s ({error}): "
            "start the cluster (`ray start --head`) or fix cluster.address / RAY_ADDRESS"
        ) from None


def start_ray(cluster: ClusterSettings, py_modules: list[str] = ()) -> None:
    """Join the cluster at :func:`resolve_address`, or start a local Ray sized for the run.

    ``py_modules``: local package folders (a user's model code) Ray uploads to every worker of the job.
    """
    import ray

    from pipeline.env import is_verbose, quiet_native_stderr, worker_env_vars
    from pipeline.training.ray_logs import install_worker_log_filter

    address = resolve_address(cluster)
    common = dict(
        runtime_env={
            "env_vars": worker_env_vars(),
            **({"py_modules": list(py_modules)} if py_modules else {}),
        },
        log_to_driver=True,
        include_dashboard=False,
        logging_level=logging.INFO if is_verbose() else logging.ERROR,
        configure_logging=True,
    )
    if address:
        check_reachable(address, cluster.connect_timeout)
        try:
            with quiet_native_stderr():  # the C++ core announces its log level on fd 2
                ray.init(address=address, **common)
        except (ConnectionError, RuntimeError) as error:
            raise UserError(
                f"cluster: cannot connect to Ray at cluster.address={address} ({error}): "
                "start the cluster or fix the address"
            ) from None
    else:
        cpus = (
            cluster.num_workers * cluster.cpus_per_worker + 1
        )  # +1: room for Ray's own helper tasks
        custom = {
            name: amount * cluster.num_workers
            for name, amount in cluster.resources_per_worker.items()
        }
        with quiet_native_stderr():
            # num_gpus=None lets Ray detect the GPUs, so use_gpu on a machine without one fails the check below
            ray.init(
                num_cpus=cpus,
                num_gpus=None if cluster.use_gpu else 0,
                resources=custom or None,
                _system_config=LOCAL_RAY_SYSTEM_CONFIG,
                **common,
            )
    if not is_verbose():
        install_worker_log_filter()


def required_resources(cluster: ClusterSettings) -> dict[str, float]:
    """Total Ray resources ``cluster.num_workers`` workers ask for."""
    per_worker = {"CPU": float(cluster.cpus_per_worker), **cluster.resources_per_worker}
    if cluster.use_gpu:
        per_worker["GPU"] = 1.0
    return {name: amount * cluster.num_workers for name, amount in per_worker.items()}


def check_capacity(cluster: ClusterSettings, available: dict[str, float], num_nodes: int) -> None:
    """Refuse a run the cluster cannot place (Ray would otherwise wait for resources forever).

    Args:
        available: ``ray.cluster_resources()`` (totals, not what is free right now).
        num_nodes: alive nodes, for ``STRICT_SPREAD`` (one worker per node).

    Raises:
        UserError: naming the missing resource and the setting to change.
    """
    if cluster.use_gpu and available.get("GPU", 0) == 0:
        raise UserError(
            "cluster: cluster.use_gpu=true but the Ray cluster has no GPU: use cluster=local (CPU) "
            "or start Ray on a machine with a GPU"
        )
    for name, needed in required_resources(cluster).items():
        have = available.get(name, 0)
        if have < needed:
            raise UserError(
                f"cluster: {cluster.num_workers} workers need {needed:g} {name} but the Ray cluster has {have:g}: "
                "lower cluster.num_workers (or cluster.cpus_per_worker / cluster.resources_per_worker) or add nodes"
            )
    if cluster.placement_strategy == "STRICT_SPREAD" and num_nodes < cluster.num_workers:
        raise UserError(
            f"cluster: placement_strategy=STRICT_SPREAD puts each of {cluster.num_workers} workers on its own node "
            f"but the Ray cluster has {num_nodes} node(s): lower cluster.num_workers or use SPREAD"
        )


def check_cluster_capacity(cluster: ClusterSettings) -> None:
    """:func:`check_capacity` against the Ray cluster this process is connected to."""
    import ray

    alive = [node for node in ray.nodes() if node.get("Alive")]
    check_capacity(cluster, ray.cluster_resources(), len(alive))
