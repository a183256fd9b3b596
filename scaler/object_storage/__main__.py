"""``scaler_object_storage_server ADDRESS`` / ``python -m scaler.object_storage ADDRESS``.

A standalone object storage server. Flags and the ``[object_storage_server]`` TOML section
are declared on ``ObjectStorageConfig`` (``scaler.config.components``).
"""

import logging
import socket
import sys
from typing import List, Optional

from ..config.commands import OBJECT_STORAGE
from ..config.components import ObjectStorageConfig
from ..config.loader import parse_or_exit, start_component
from ..io.address import listen, parse_address
from ..io.loop import EventLoop
from ..protocol.handshake import normalize_key
from ..utility.process import on_stop_signals, watch_lifeline
from .server import ObjectStorageServer
from .store import ObjectStore


def run_object_storage(config: ObjectStorageConfig, lifeline_fd: Optional[int] = None,
                       sock: Optional[socket.socket] = None) -> None:
    loop = EventLoop()
    address = parse_address(config.address)
    if sock is None:
        sock = listen(address)
    server = ObjectStorageServer(loop, sock, str(address), normalize_key(config.auth_key),
                                 ObjectStore(config.max_bytes))
    logging.getLogger(__name__).info("object storage server listening on %s", address)
    on_stop_signals(lambda _signum: loop.call_soon_threadsafe(loop.stop))
    watch_lifeline(lifeline_fd, lambda: loop.call_soon_threadsafe(loop.stop))
    try:
        loop.run()
    finally:
        server.close()
        loop.close()
        if address.scheme == "ipc":
            import os
            try:
                os.unlink(address.path)
            except OSError:
                pass


def main(argv: Optional[List[str]] = None) -> int:
    loaded = parse_or_exit(OBJECT_STORAGE, argv)
    config = loaded.config
    start_component(config, "object storage")
    if loaded.listen_fd >= 0:
        sock = socket.socket(fileno=loaded.listen_fd)
    else:
        try:
            sock = listen(parse_address(config.address))
        except OSError as exc:
            print("%s: error: %s" % (OBJECT_STORAGE.prog, exc.strerror or exc), file=sys.stderr)
            return 1
    run_object_storage(config, loaded.lifeline_fd, sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
