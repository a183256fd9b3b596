"""What each task cost where it ran: ``Client(profiling=True)`` and ``future.profiling_info()``.

    python examples/profiling_client.py                        # starts its own scheduler and 2 workers
    python examples/profiling_client.py tcp://127.0.0.1:8516   # uses a scheduler that is already running

``profiling_info()`` gives ``duration_s`` (wall time of the call in the worker),
``cpu_time_s`` (CPU time it used) and ``memory_peak`` (bytes allocated at its peak, as
upstream's); ``task_duration()`` is the time from ``submit`` to the result, as the client
saw it. Libraries such as parfun size their partitions from ``cpu_time_s``.
"""

import os
import sys
import time

try:
    import scaler  # noqa: F401
except ImportError:  # run from a source checkout without installing: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaler import Client, SchedulerClusterCombo


def busy(seconds):
    """Burn CPU for ``seconds``."""
    end = time.process_time() + seconds
    total = 0
    while time.process_time() < end:
        total += 1
    return total


def sleepy(seconds):
    """Take time without CPU."""
    time.sleep(seconds)
    return seconds


def hungry(megabytes):
    """Allocate memory, then let it go."""
    block = bytearray(megabytes * 1024 * 1024)
    return len(block)


def main(argv):
    address = argv[1] if len(argv) > 1 else None
    cluster = None
    if address is None:
        cluster = SchedulerClusterCombo(n_workers=2, logging_level="WARNING")
        address = cluster.get_address()
    try:
        with Client(address, profiling=True) as client:
            futures = {"busy": client.submit(busy, 0.3), "sleepy": client.submit(sleepy, 0.3),
                       "hungry": client.submit(hungry, 50)}
            for future in futures.values():
                future.result(timeout=60)
            profiles = {name: future.profiling_info() for name, future in futures.items()}
            for name, profile in profiles.items():
                print("%-7s duration %.3f s  cpu %.3f s  memory peak %5.1f MB  (submit to result %.3f s)" % (
                    name, profile.duration_s, profile.cpu_time_s, profile.memory_peak / 1e6,
                    futures[name].task_duration()))
    finally:
        if cluster is not None:
            cluster.shutdown()
    assert profiles["busy"].cpu_time_s >= 0.25, "a busy task used CPU"
    assert profiles["sleepy"].duration_s >= 0.3 and profiles["sleepy"].cpu_time_s < 0.2, "a sleep is not CPU"
    assert profiles["hungry"].memory_peak >= 40 * 1024 * 1024, "a 50 MB allocation shows in memory_peak"
    print("profiled 3 tasks")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
