"""Tasks that submit tasks: recursive Fibonacci, on ONE worker.

    python examples/nested_client.py                        # starts its own scheduler and 1 worker
    python examples/nested_client.py tcp://127.0.0.1:8516   # uses a scheduler that is already running

Inside a task, ``Client()`` (no address) joins the scheduler that runs the task. A task
that waits for its children does not hold its worker hostage: while it waits, its
processor runs the tasks that outrank it (a child has its parent's priority + 1), so even
a single worker finishes ``fib(10)``. The last line printed is ``fib(10) = 55``.
"""

import os
import sys

try:
    import scaler  # noqa: F401
except ImportError:  # run from a source checkout without installing: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaler import Client, SchedulerClusterCombo


def fib(n):
    if n < 2:
        return n
    with Client() as client:  # the scheduler that runs this task
        a = client.submit(fib, n - 1)
        b = client.submit(fib, n - 2)
        return a.result() + b.result()


def main(argv):
    address = argv[1] if len(argv) > 1 else None
    cluster = None
    if address is None:
        cluster = SchedulerClusterCombo(n_workers=1, logging_level="WARNING")
        address = cluster.get_address()
    try:
        with Client(address) as client:
            print("fib(10) =", client.submit(fib, 10).result(timeout=300))
    finally:
        if cluster is not None:
            cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
