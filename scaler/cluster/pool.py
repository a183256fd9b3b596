"""A fixed pool of workers: the native worker manager in fixed mode.

Used by ``python -m scaler.cluster`` and (through it) by ``Cluster`` and
``SchedulerClusterCombo``. It registers with the scheduler with capacity 0, so it is
never scaled. A worker that dies is restarted with back-off (``restart_workers``, on by
default; upstream never restarts one), so the pool keeps its size.
"""

import dataclasses
import socket
from typing import Optional

from ..config.components import ClusterConfig, WorkerManagerConfig


def manager_config(config: ClusterConfig, manager_id: str = "") -> WorkerManagerConfig:
    fields = {f.name for f in dataclasses.fields(WorkerManagerConfig)}
    values = {k: v for k, v in dataclasses.asdict(config).items() if k in fields}
    values.update(mode="fixed", max_task_concurrency=config.num_of_workers, worker_type="FIX",
                  worker_manager_id=manager_id or config.worker_manager_id)
    return WorkerManagerConfig(**values)


def run_cluster(config: ClusterConfig, lifeline_fd: Optional[int] = None) -> int:
    from ..worker_manager.native import run_native_manager
    if config.num_of_workers < 0:
        raise ValueError("num_of_workers must be >= 0, got %d" % config.num_of_workers)
    names = list(config.worker_names)
    if names and len(names) != config.num_of_workers:
        raise ValueError("%d worker names given for %d workers" % (len(names), config.num_of_workers))
    if not names:
        host = socket.gethostname()
        names = ["%s_%d" % (host, i) for i in range(config.num_of_workers)]
    return run_native_manager(manager_config(config), lifeline_fd, names)
