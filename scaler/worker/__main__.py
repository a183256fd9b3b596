"""``python -m scaler.worker --config-json '{...}'``: one worker, as started by clusters and managers."""

import sys
from typing import List, Optional

from ..config.commands import WORKER
from ..utility.process import run_main
from .agent import run_worker


def main(argv: Optional[List[str]] = None) -> int:
    return run_main(WORKER, argv, "worker", lambda loaded: run_worker(loaded.config, loaded.lifeline_fd))


if __name__ == "__main__":
    sys.exit(main())
