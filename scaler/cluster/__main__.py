"""``scaler_cluster SCHEDULER_ADDRESS -n N`` / ``python -m scaler.cluster``: a fixed pool of workers.

Flags and the ``[cluster]`` TOML section are declared on ``ClusterConfig``
(``scaler.config.components``). Hidden flags used by the spawner: ``--lifeline-fd``,
``--config-json``.
"""

import sys
from typing import List, Optional

from ..config.commands import CLUSTER
from ..utility.process import run_main
from .pool import run_cluster


def main(argv: Optional[List[str]] = None) -> int:
    return run_main(CLUSTER, argv, "cluster", lambda loaded: run_cluster(loaded.config, loaded.lifeline_fd))


if __name__ == "__main__":
    sys.exit(main())
