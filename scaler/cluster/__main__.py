"""``scaler_cluster SCHEDULER_ADDRESS -n N`` / ``python -m scaler.cluster``: a fixed pool of workers.

Flags and the ``[cluster]`` TOML section are declared on ``ClusterConfig``
(``scaler.config.components``). Hidden flags used by the spawner: ``--lifeline-fd``,
``--config-json``.
"""

import dataclasses
import json
import sys
from typing import List, Optional

from ..config.commands import CLUSTER
from ..config.components import ClusterConfig
from ..config.loader import parse_or_exit, start_component
from .pool import run_cluster


def main(argv: Optional[List[str]] = None) -> int:
    loaded = parse_or_exit(CLUSTER, argv)
    start_component(loaded.config, "cluster")
    return run_cluster(loaded.config, loaded.lifeline_fd)


def config_args(config: ClusterConfig) -> List[str]:
    return ["--config-json", json.dumps(dataclasses.asdict(config))]


if __name__ == "__main__":
    sys.exit(main())
