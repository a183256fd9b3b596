"""Send a large object once, then use it from many tasks.

``Client.send_object`` serialises the object once and stores it in object storage; the
returned ``ObjectReference`` is passed as a task argument instead of the object. Each
worker fetches it once and keeps it for the later tasks of this client.

    python examples/send_object_client.py                        # starts its own scheduler and 2 workers
    python examples/send_object_client.py tcp://127.0.0.1:8516   # uses a scheduler that is already running

The last line printed is the result line.
"""

import os
import sys

try:
    import scaler  # noqa: F401
except ImportError:  # run from a source checkout without installing: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaler import Client, SchedulerClusterCombo

N = 2_000_000
CHUNKS = 8


def partial_sum(numbers, start, stop):
    """Runs on a worker: ``numbers`` arrives as the list itself, not as the reference."""
    return sum(numbers[start:stop])


def main(argv):
    address = argv[1] if len(argv) > 1 else None
    cluster = None
    if address is None:
        cluster = SchedulerClusterCombo(n_workers=2, logging_level="WARNING")
        address = cluster.get_address()
    numbers = list(range(N))
    try:
        with Client(address=address) as client:
            ref = client.send_object(numbers, name="numbers")  # serialised and uploaded once
            step = N // CHUNKS
            futures = [client.submit(partial_sum, ref, i * step, (i + 1) * step) for i in range(CHUNKS)]
            total = sum(future.result() for future in futures)
            size = ref.size
    finally:
        if cluster is not None:
            cluster.shutdown()
    assert total == sum(numbers)
    print("sent %d numbers once (%d bytes serialised), used by %d tasks" % (N, size, CHUNKS))
    print("sum = %d" % total)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
