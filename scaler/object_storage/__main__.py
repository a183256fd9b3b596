"""``python -m scaler.object_storage ADDRESS``: a standalone object storage server."""

import argparse
import sys
from typing import List, Optional

from ..config.components import ObjectStorageConfig
from ..io.address import listen, parse_address
from ..io.loop import EventLoop
from ..protocol.handshake import normalize_key
from ..utility.process import auth_key_from_env, on_stop_signals, setup_logging, watch_lifeline
from .server import ObjectStorageServer
from .store import ObjectStore


def run_object_storage(config: ObjectStorageConfig, lifeline_fd: Optional[int] = None) -> None:
    import logging
    loop = EventLoop()
    address = parse_address(config.address)
    server = ObjectStorageServer(loop, listen(address), str(address), normalize_key(config.auth_key),
                                 ObjectStore(config.max_bytes))
    logging.getLogger(__name__).info("object storage server listening on %s", address)
    on_stop_signals(lambda _signum: loop.call_soon_threadsafe(loop.stop))
    watch_lifeline(lifeline_fd, lambda: loop.call_soon_threadsafe(loop.stop))
    try:
        loop.run()
    finally:
        server.close()
        loop.close()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="scaler_object_storage_server", description="run an object storage server")
    parser.add_argument("--lifeline-fd", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("address")
    parser.add_argument("--auth-key", default=None)
    parser.add_argument("--logging-level", "-ll", default="INFO")
    args = parser.parse_args(argv)
    config = ObjectStorageConfig(address=args.address, auth_key=args.auth_key or auth_key_from_env(),
                                 logging_level=args.logging_level)
    setup_logging(config.logging_level, config.logging_paths, config.logging_config_file, "object storage")
    run_object_storage(config, args.lifeline_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
