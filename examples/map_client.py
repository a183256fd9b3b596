"""Many tasks at once: ``Client.map`` (blocking, returns results) and ``Client.map_futures``
(returns futures at once, to consume with ``concurrent.futures.as_completed``).

    python examples/map_client.py                        # starts its own scheduler and 2 workers
    python examples/map_client.py tcp://127.0.0.1:8516   # uses a scheduler that is already running

The last line printed is the result line.
"""

import concurrent.futures
import os
import sys
import time

try:
    import scaler  # noqa: F401
except ImportError:  # run from a source checkout without installing: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaler import Client, SchedulerClusterCombo


def square(x):
    return x * x


def slow_double(x, delay):
    time.sleep(delay)
    return 2 * x


def main(argv):
    address = argv[1] if len(argv) > 1 else None
    cluster = None
    if address is None:
        cluster = SchedulerClusterCombo(n_workers=2, logging_level="WARNING")
        address = cluster.get_address()
    try:
        with Client(address=address) as client:
            # map: like the built-in map over one or more iterables, but it blocks and
            # returns the list of results, in order.
            squares = client.map(square, range(1000))
            assert squares == [x * x for x in range(1000)]

            # map_futures: one future per call, returned at once. as_completed yields them
            # as they finish, so the short tasks come back first.
            delays = [0.3, 0.2, 0.1, 0.0]
            futures = client.map_futures(slow_double, range(len(delays)), delays)
            finished = [future.result() for future in concurrent.futures.as_completed(futures)]
            in_order = [future.result() for future in futures]
    finally:
        if cluster is not None:
            cluster.shutdown()
    print("completion order:", finished)
    print("sum of squares of 0..999 = %d; doubles in submission order = %s" % (sum(squares), in_order))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
