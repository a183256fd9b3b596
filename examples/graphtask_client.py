"""A Dask-style task graph, computed on the cluster with ``client.get``.

    python examples/graphtask_client.py                        # starts its own scheduler and 2 workers
    python examples/graphtask_client.py tcp://127.0.0.1:8516   # uses a scheduler that is already running

A graph maps keys to data or to task tuples ``(function, arg, ...)``; an argument that is
a key (alone, or inside a list/tuple/dict) is replaced by that key's result. The graph goes
to the scheduler once; intermediate results move between workers through object storage
and only the requested keys come back. The last line printed is ``total = 30``.
"""

import os
import sys

try:
    import scaler  # noqa: F401
except ImportError:  # run from a source checkout without installing: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaler import Client, SchedulerClusterCombo


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def main(argv):
    address = argv[1] if len(argv) > 1 else None
    cluster = None
    if address is None:
        cluster = SchedulerClusterCombo(n_workers=2, logging_level="WARNING")
        address = cluster.get_address()
    graph = {
        "a": 1,                          # data
        "b": (inc, "a"),                 # 2
        "c": (inc, "b"),                 # 3
        "d": (add, "b", "c"),            # 5
        "e": (sum, ["a", "b", "c", "d", 4]),  # keys inside a list: 15
        "total": (add, "e", "e"),        # 30
    }
    try:
        with Client(address) as client:
            print("d, e =", client.get(graph, ["d", "e"]))
            futures = client.get(graph, ["b", "c"], block=False)  # futures, in the same shape
            print("b, c =", [future.result() for future in futures])
            print("total =", client.get(graph, "total"))
    finally:
        if cluster is not None:
            cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
