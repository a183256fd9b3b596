"""``NativeWorkerManager``: upstream's Python entry to the baremetal native worker manager.

``NativeWorkerManager(NativeWorkerManagerConfig(...)).run()`` runs, in the calling process,
the same worker manager as ``scaler_worker_manager baremetal_native`` (``scaler.worker_manager
.native``): fixed mode starts ``max_task_concurrency`` workers at once, dynamic mode starts
and stops them as the scheduler's scaling policy asks. ``run()`` blocks until SIGINT or
SIGTERM (then it stops its workers) or until the scheduler goes away for good, and must be
called from the main thread (it handles signals). Upstream runs it in a process of its own,
for example ``multiprocessing.get_context("spawn").Process(target=manager.run)``.
"""

import threading
from typing import Union

from ...config import components
from ...config.section.native_worker_manager import NativeWorkerManagerConfig


class NativeWorkerManager:
    def __init__(self, config: Union[NativeWorkerManagerConfig, components.WorkerManagerConfig]) -> None:
        if isinstance(config, components.WorkerManagerConfig):
            config = NativeWorkerManagerConfig.from_scaler(config)
        if not isinstance(config, NativeWorkerManagerConfig):
            raise TypeError("NativeWorkerManager takes a NativeWorkerManagerConfig, got %r" % (config,))
        self._config = config

    @property
    def config(self) -> NativeWorkerManagerConfig:
        return self._config

    def run(self) -> int:
        """Run the worker manager until it is stopped; return its exit status (0: stopped normally)."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("NativeWorkerManager.run() must be called from the main thread (it handles SIGINT "
                               "and SIGTERM): run it in a process of its own")
        from ...worker_manager.native import run_native_manager
        return run_native_manager(self._config.to_scaler())

    def __repr__(self) -> str:
        return "<NativeWorkerManager %s>" % (self._config,)




__all__ = ["NativeWorkerManager"]
