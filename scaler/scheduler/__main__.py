"""``scaler_scheduler ADDRESS`` / ``python -m scaler.scheduler ADDRESS``: run a scheduler.

Unless ``--object-storage-address`` is given the scheduler also hosts the object storage,
on ADDRESS port + 1. Flags and the ``[scheduler]`` TOML section are declared on
``SchedulerConfig`` (``scaler.config.components``). Hidden flags used by the spawner:
``--lifeline-fd``, ``--config-json``, ``--listen-fd``, ``--storage-listen-fd``.
"""

import socket
import sys
from typing import List, Optional

from ..config.commands import SCHEDULER
from ..config.loader import Loaded
from ..io.address import listen, parse_address
from ..utility.process import run_main
from .monitor import open_monitor_socket
from .server import run_scheduler


def main(argv: Optional[List[str]] = None) -> int:
    return run_main(SCHEDULER, argv, "scheduler", _run)


def _run(loaded: Loaded) -> int:
    config = loaded.config
    sock = _inherited(loaded.listen_fd)
    storage_sock = _inherited(loaded.storage_listen_fd)
    monitor_sock = _inherited(loaded.monitor_listen_fd)
    try:  # bind here so that a busy port is one clear line, not a traceback
        if sock is None:
            sock = listen(parse_address(config.address))
        if storage_sock is None and config.object_storage_address is None:
            storage_sock = listen(parse_address(config.address).with_port_offset(1))
        if monitor_sock is None:
            monitor_sock = open_monitor_socket(config)
    except OSError as exc:
        print("%s: error: %s" % (SCHEDULER.prog, exc.strerror or exc), file=sys.stderr)
        return 1
    run_scheduler(config, sock, storage_sock, loaded.lifeline_fd, monitor_sock, bind_monitor=False)
    return 0


def _inherited(fd: int) -> Optional[socket.socket]:
    return socket.socket(fileno=fd) if fd >= 0 else None


if __name__ == "__main__":
    sys.exit(main())
