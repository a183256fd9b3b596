"""The smallest scaler program: start a local cluster, run one task, shut down.

    python examples/simple_client.py                        # starts its own scheduler and 2 workers
    python examples/simple_client.py tcp://127.0.0.1:8516   # uses a scheduler that is already running

The last line printed is the result, ``5``.
"""

import os
import sys

try:
    import scaler  # noqa: F401
except ImportError:  # run from a source checkout without installing: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaler import Client, SchedulerClusterCombo


def add(a, b):
    return a + b


def main(argv):
    address = argv[1] if len(argv) > 1 else None
    cluster = None
    if address is None:
        # A scheduler (with its object storage) and 2 workers, on a free local port.
        cluster = SchedulerClusterCombo(n_workers=2, logging_level="WARNING")
        address = cluster.get_address()
    try:
        with Client(address=address) as client:
            future = client.submit(add, 2, 3)
            result = future.result()
    finally:
        if cluster is not None:
            cluster.shutdown()  # stops and reaps every process the combo started
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
