"""Worker managers: processes that start and stop workers on this machine."""

from typing import Optional

from ..config.components import WorkerManagerConfig


def run_worker_manager(config: WorkerManagerConfig, lifeline_fd: Optional[int] = None) -> int:
    """Run a baremetal native worker manager (fixed or dynamic mode) until stopped; return an exit code."""
    from .native import run_native_manager
    return run_native_manager(config, lifeline_fd)
