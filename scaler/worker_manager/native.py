"""The baremetal native worker manager (fixed mode for now; dynamic mode follows)."""

import dataclasses
from typing import Optional

from ..config.components import ClusterConfig, WorkerManagerConfig
from ..cluster.pool import run_cluster


def run_native_manager(config: WorkerManagerConfig, lifeline_fd: Optional[int] = None) -> int:
    if config.mode.lower() != "fixed":
        raise NotImplementedError("dynamic mode is being built")
    fields = {f.name for f in dataclasses.fields(ClusterConfig)}
    values = {k: v for k, v in dataclasses.asdict(config).items() if k in fields}
    values["num_of_workers"] = config.max_task_concurrency
    return run_cluster(ClusterConfig(**values), lifeline_fd)
