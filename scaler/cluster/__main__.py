"""``python -m scaler.cluster SCHEDULER_ADDRESS -n N``: a fixed pool of workers."""

import argparse
import dataclasses
import json
import sys
from typing import List, Optional

from ..config.components import ClusterConfig
from ..utility.process import setup_logging
from .pool import run_cluster


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="scaler_cluster", description="start a fixed pool of scaler workers")
    parser.add_argument("--lifeline-fd", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--config-json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("scheduler_address", nargs="?")
    parser.add_argument("--num-of-workers", "-n", type=int, default=None)
    parser.add_argument("--auth-key", default=None)
    parser.add_argument("--logging-level", "-ll", default=None)
    args = parser.parse_args(argv)
    config = ClusterConfig(**json.loads(args.config_json)) if args.config_json else ClusterConfig()
    if args.scheduler_address:
        config.scheduler_address = args.scheduler_address
    if args.num_of_workers is not None:
        config.num_of_workers = args.num_of_workers
    if args.auth_key:
        config.auth_key = args.auth_key
    if args.logging_level:
        config.logging_level = args.logging_level
    if not config.scheduler_address:
        parser.error("the scheduler address is required")
    setup_logging(config.logging_level, config.logging_paths, config.logging_config_file, "cluster")
    return run_cluster(config, args.lifeline_fd)


def config_args(config: ClusterConfig) -> List[str]:
    return ["--config-json", json.dumps(dataclasses.asdict(config))]


if __name__ == "__main__":
    sys.exit(main())
