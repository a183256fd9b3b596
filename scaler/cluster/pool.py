"""A fixed pool of workers: start N, watch them, stop them all together.

Used by ``python -m scaler.cluster`` and (through it) by ``Cluster`` and
``SchedulerClusterCombo``. Dead workers are logged and not restarted (as upstream).
"""

import dataclasses
import json
import logging
import signal
from typing import List, Optional

from ..config.components import ClusterConfig, WorkerConfig
from ..io.loop import EventLoop
from ..utility import process as proc_util

logger = logging.getLogger(__name__)


def worker_config(config: ClusterConfig, name: str, manager_id: str = "") -> WorkerConfig:
    fields = {f.name for f in dataclasses.fields(WorkerConfig)}
    values = {k: v for k, v in dataclasses.asdict(config).items() if k in fields}
    values.update(name=name, manager_id=manager_id)
    values["auth_key"] = None  # travels in the environment, not on the command line
    return WorkerConfig(**values)


def start_worker(config: WorkerConfig, auth_key: Optional[str]) -> proc_util.Child:
    env = proc_util.child_environment({proc_util.AUTH_KEY_ENV: auth_key} if auth_key else None)
    payload = json.dumps(dataclasses.asdict(config))
    return proc_util.spawn("worker %s" % config.name, "worker", ["--config-json", payload], env=env)


def run_cluster(config: ClusterConfig, lifeline_fd: Optional[int] = None) -> int:
    if config.num_of_workers < 0:
        raise ValueError("num_of_workers must be >= 0, got %d" % config.num_of_workers)
    names = list(config.worker_names)
    if names and len(names) != config.num_of_workers:
        raise ValueError("%d worker names given for %d workers" % (len(names), config.num_of_workers))
    import socket as _socket
    host = _socket.gethostname()
    names = names or ["%s_%d" % (host, i) for i in range(config.num_of_workers)]
    auth_key = config.auth_key or proc_util.auth_key_from_env()
    children: List[proc_util.Child] = [start_worker(worker_config(config, name), auth_key) for name in names]
    logger.info("started %d worker(s) for %s", len(children), config.scheduler_address)

    loop = EventLoop()
    alive = {child.pid: child for child in children}

    def reap() -> None:
        for pid, child in list(alive.items()):
            code = child.poll()
            if code is not None:
                del alive[pid]
                child.close_lifeline()
                log = logger.info if code == 0 else logger.warning
                log("%s (pid %d) exited with code %d; not restarting it", child.name, pid, code)
        if not alive:
            loop.stop()

    def stop(_signum: int = 0) -> None:
        loop.call_soon_threadsafe(loop.stop)

    signal.signal(signal.SIGCHLD, lambda *_: loop.call_soon_threadsafe(reap))
    proc_util.on_stop_signals(stop)
    proc_util.watch_lifeline(lifeline_fd, lambda: (proc_util.exit_soon_after(10.0), stop()))
    loop.call_every(1.0, reap)
    try:
        loop.run()
    finally:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        proc_util.stop_all(children)
        loop.close()
    return 0
