"""``python -m scaler.scheduler ADDRESS``: run a scheduler (and its object storage server)."""

import argparse
import json
import socket
import sys
from typing import List, Optional

from ..config.components import SchedulerConfig
from ..utility.process import auth_key_from_env, setup_logging
from .server import run_scheduler


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError("expected true or false, got %r" % text)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="scaler_scheduler", description="run a scaler scheduler")
    parser.add_argument("--lifeline-fd", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--listen-fd", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--storage-listen-fd", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--config-json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("address", nargs="?")
    parser.add_argument("--object-storage-address", "-osa", default=None)
    parser.add_argument("--protected", "-p", type=_bool, default=None)
    parser.add_argument("--auth-key", default=None)
    parser.add_argument("--logging-level", "-ll", default=None)
    args = parser.parse_args(argv)
    config = SchedulerConfig(**json.loads(args.config_json)) if args.config_json else SchedulerConfig()
    for name in ("address", "object_storage_address", "protected", "auth_key", "logging_level"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    if not config.address:
        parser.error("the scheduler address is required")
    config.auth_key = config.auth_key or auth_key_from_env()
    setup_logging(config.logging_level, config.logging_paths, config.logging_config_file, "scheduler")
    sock = _inherited(args.listen_fd)
    storage_sock = _inherited(args.storage_listen_fd)
    run_scheduler(config, sock, storage_sock, args.lifeline_fd)
    return 0


def _inherited(fd: int) -> Optional[socket.socket]:
    return socket.socket(fileno=fd) if fd >= 0 else None


if __name__ == "__main__":
    sys.exit(main())
