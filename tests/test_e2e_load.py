"""Load: many clients and many thin workers against one scheduler; nothing lost or duplicated.

The default suite runs a small size; ``SCALER_LOAD_CLIENTS``, ``SCALER_LOAD_TASKS`` and
``SCALER_LOAD_WORKERS`` raise it (``benchmarks/bench_load.py`` runs the full 64 x 5 000
with 200 workers and prints the figures quoted in docs/performance.rst).
"""

import os
import sys

import pytest

from e2e_support import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
from bench_load import run_load  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_many_clients_and_many_workers_lose_and_duplicate_nothing():
    clients = int(os.environ.get("SCALER_LOAD_CLIENTS", "16"))
    tasks = int(os.environ.get("SCALER_LOAD_TASKS", "1000"))
    workers = int(os.environ.get("SCALER_LOAD_WORKERS", "100"))
    figures = run_load(clients, tasks, workers, processes=min(4, clients), timeout=300.0)
    assert not figures["errors"], figures["errors"][:3]
    assert figures["ok"] == clients * tasks and figures["bad"] == 0, figures
    assert figures["duplicates_at_workers"] == 0, figures
    assert figures["workers_registered"] == workers, figures
    assert figures["tasks_at_workers"] >= clients * tasks, figures
