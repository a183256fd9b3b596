"""The task functions every engine of ``bench_peers.py`` runs.

A module of its own, on every engine's ``PYTHONPATH`` (the parent puts this directory
there), so each engine ships the functions by reference, as it would a user's installed
code, and no engine pays for pickling a function by value. Standard library only: it is
imported in every peer's virtual environment.
"""

import os
import time


def noop(x):
    return x


def busy(seconds):
    """Real work: spin on the CPU for ``seconds`` of wall time (not a sleep)."""
    perf = time.perf_counter
    end = perf() + seconds
    while perf() < end:
        pass
    return seconds


def payload_len(payload):
    return len(payload)


def build_result(size):
    """A ``size``-byte result, built cheaply (one allocation and fill)."""
    return b"x" * size


def build_only(size):
    """The same build as ``build_result``, returning only the length: its round trip is
    the build cost without the result transfer."""
    return len(b"x" * size)


def graph_leaf(i):
    return i + 1


def graph_pair(a, b):
    return a + b


def block_until(release_path, started_dir):
    """Occupy a worker until ``release_path`` exists; announce the start with a file named
    after this process in ``started_dir``."""
    with open(os.path.join(started_dir, "started-%d" % os.getpid()), "w"):
        pass
    while not os.path.exists(release_path):
        time.sleep(0.005)
    return os.getpid()
