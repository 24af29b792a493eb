"""Ray Train's TensorFlow backend (``TF_CONFIG`` per worker) without importing TensorFlow in the driver.

``ray.train.tensorflow`` imports TensorFlow at package import, so a driver using its
``TensorflowTrainer`` (and the Ray Train controller unpickling its ``TensorflowConfig``) each paid
a ~5 s TensorFlow import before any worker started, for nothing: only the workers run TensorFlow.
This backend does what Ray's ``_TensorflowBackend.on_start`` does (Ray 2.52: every worker gets
``TF_CONFIG`` naming all workers and its own index, read by ``MultiWorkerMirroredStrategy``) and is
used with Ray Train's generic ``DataParallelTrainer``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ray.train.backend import Backend, BackendConfig


def _worker_url() -> str:
    from ray._common.network_utils import build_address
    from ray.train._internal.utils import get_address_and_port

    return build_address(*get_address_and_port())


def _set_tf_config(worker_addresses: list[str], index: int) -> None:
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": worker_addresses}, "task": {"type": "worker", "index": index}}
    )


class _TFConfigBackend(Backend):
    def on_start(self, worker_group, backend_config: BackendConfig) -> None:
        import ray

        urls = worker_group.execute(_worker_url)
        ray.get(
            [
                worker_group.execute_single_async(
                    index, _set_tf_config, worker_addresses=urls, index=index
                )
                for index in range(len(worker_group))
            ]
        )


@dataclass
class TFConfigBackend(BackendConfig):
    """Backend config for ``DataParallelTrainer(backend_config=TFConfigBackend())``."""

    @property
    def backend_cls(self):
        return _TFConfigBackend
