"""What a process on the path costs: a message's round trip along a chain of processes.

The first process sends a small frame to the second, each passes it on to the next with
this package's own event loop and connection (as the scheduler and the agent do), the last
sends it back, and it returns the same way. A chain of 4 is the shape of a task's round
trip today (client, scheduler, worker agent, processor: 6 hops); 3 is the same without the
agent on the path; 2 is ``ProcessPoolExecutor``'s caller and worker. No task runs, nothing
is pickled: this is the floor the transport sets for each shape.

    python benchmarks/bench_hops.py [--processes 2 3 4] [--trips 3000] [--rounds 3]

Linux and macOS (it forks); the chains of a round run one after another, and the table
shows each chain's median over the rounds' medians.
"""

import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaler.io.connection import BlockingChannel, Connection, Handler  # noqa: E402
from scaler.io.loop import EventLoop  # noqa: E402
from scaler.protocol.messages import TaskResult  # noqa: E402

WARM_UP = 300


class _Node(Handler):
    """Passes what comes from one side to the other; the last node sends it back."""

    def __init__(self) -> None:
        self.left = None
        self.right = None

    def connection_open(self, conn):
        pass

    def message_received(self, conn, msg):
        if self.right is None:
            self.left.send(msg)
        elif conn is self.left:
            self.right.send(msg)
        else:
            self.left.send(msg)

    def connection_closed(self, conn, reason):
        os._exit(0)


def _serve(left, right):
    loop = EventLoop()
    node = _Node()
    node.left = Connection(loop, left, node, peer="left", handshake=False)
    if right is not None:
        node.right = Connection(loop, right, node, peer="right", handshake=False)
    loop.run()


def chain_round_trip(processes, trips):
    """Median round trip in seconds along a chain of ``processes`` (>= 2)."""
    links = [socket.socketpair() for _ in range(processes - 1)]  # link i joins node i and node i + 1
    children = []
    try:
        for index in range(1, processes):
            pid = os.fork()
            if pid == 0:
                try:
                    left = links[index - 1][1]
                    right = links[index][0] if index < processes - 1 else None
                    for a, b in links:
                        if a is not right:
                            a.close()
                        if b is not left:
                            b.close()
                    left.setblocking(False)
                    if right is not None:
                        right.setblocking(False)
                    _serve(left, right)
                finally:
                    os._exit(0)
            children.append(pid)
        channel = BlockingChannel(links[0][0])
        message = TaskResult(os.urandom(32), 0, b"x" * 100, "")
        samples = []
        for trip in range(trips + WARM_UP):
            start = time.perf_counter()
            channel.send(message)
            channel.recv()
            if trip >= WARM_UP:
                samples.append(time.perf_counter() - start)
        samples.sort()
        return samples[len(samples) // 2]
    finally:
        for a, b in links:
            a.close()
            b.close()
        for pid in children:
            os.waitpid(pid, 0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--trips", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if not hasattr(os, "fork"):
        parser.error("needs os.fork")
    if min(args.processes) < 2 or args.trips < 1 or args.rounds < 1:
        parser.error("--processes at least 2 each, --trips and --rounds at least 1")
    medians = {n: [] for n in args.processes}
    for _ in range(args.rounds):
        for n in args.processes:
            medians[n].append(chain_round_trip(n, args.trips))
    print("%-10s %6s %22s %14s" % ("processes", "hops", "round trip, median", "per hop"))
    for n in args.processes:
        values = sorted(medians[n])
        median = values[len(values) // 2]
        print("%-10d %6d %19.1f us %11.1f us" % (n, 2 * (n - 1), median * 1e6, median * 1e6 / (2 * (n - 1))))


if __name__ == "__main__":
    main()
