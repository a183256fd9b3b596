"""``scaler_object_storage_server ADDRESS`` / ``python -m scaler.object_storage ADDRESS``.

A standalone object storage server. Flags and the ``[object_storage_server]`` TOML section
are declared on ``ObjectStorageConfig`` (``scaler.config.components``).
"""

import logging
import os
import socket
import sys
from typing import List, Optional

from ..config.commands import OBJECT_STORAGE
from ..config.components import ObjectStorageConfig
from ..config.loader import Loaded
from ..io.address import exposure_warning, listen, parse_address
from ..io.loop import EventLoop
from ..protocol.handshake import normalize_key
from ..utility.process import run_loop, run_main
from .server import ObjectStorageServer
from .store import ObjectStore


def run_object_storage(config: ObjectStorageConfig, lifeline_fd: Optional[int] = None,
                       sock: Optional[socket.socket] = None) -> None:
    loop = EventLoop()
    address = parse_address(config.address)
    if sock is None:
        sock = listen(address)
    tls = None
    if address.is_tls:
        from ..io.tls import server_context
        if not config.tls_cert or not config.tls_key:
            raise ValueError("%s is a tls:// address: give --tls-cert and --tls-key" % address)
        tls = server_context(config.tls_cert, config.tls_key)
    server = ObjectStorageServer(loop, sock, str(address), normalize_key(config.auth_key),
                                 ObjectStore(config.max_bytes), tls=tls)
    logger = logging.getLogger(__name__)
    exposure = exposure_warning("object storage server", [address], normalize_key(config.auth_key))
    if exposure:
        logger.warning(exposure)
    logger.info("object storage server listening on %s", address)

    def cleanup() -> None:
        server.close()
        if address.scheme == "ipc":
            try:
                os.unlink(address.path)
            except OSError:
                pass

    run_loop(loop, loop.stop, lifeline_fd, cleanup=cleanup)


def main(argv: Optional[List[str]] = None) -> int:
    return run_main(OBJECT_STORAGE, argv, "object storage", _run)


def _run(loaded: Loaded) -> int:
    config = loaded.config
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
