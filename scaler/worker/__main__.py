"""``python -m scaler.worker --config-json '{...}'``: one worker, as started by clusters and managers."""

import argparse
import json
import sys
from typing import List, Optional

from ..config.components import WorkerConfig
from ..utility.process import setup_logging
from .agent import run_worker


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaler.worker", description="run one scaler worker")
    parser.add_argument("--lifeline-fd", type=int, default=-1)
    parser.add_argument("--config-json", required=True, help="WorkerConfig fields as a JSON object")
    args = parser.parse_args(argv)
    config = WorkerConfig(**json.loads(args.config_json))
    setup_logging(config.logging_level, config.logging_paths, config.logging_config_file, "worker")
    return run_worker(config, args.lifeline_fd)


if __name__ == "__main__":
    sys.exit(main())
