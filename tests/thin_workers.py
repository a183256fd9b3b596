"""Many protocol-level workers in one process, for load tests: the scheduler is what is
under load. Each worker registers like a real one (an agent's connection, then a
processor's), says every object it is asked to fetch is there, answers every task at once
with the pickled task id, and counts what it was sent.

    python tests/thin_workers.py ADDRESS COUNT SECONDS REPORT.json

Runs until SECONDS have passed (or SIGTERM), then writes {"tasks": n, "duplicates": d,
"workers": registered} to REPORT.json.
"""

import json
import os
import pickle
import signal
import sys
import time

from scaler.io.address import parse_address
from scaler.io.connection import Connection, Handler
from scaler.io.loop import EventLoop
from scaler.protocol.messages import (ROLE_WORKER, STATUS_CANCELLED, STATUS_OK, ProcessorCancel, ProcessorConnect,
                                      ProcessorTask, TaskResult, WorkerConnect, WorkerConnectReply,
                                      WorkerFetchObject, WorkerHeartbeat, WorkerObjectReady)

TOKEN = b"thin-token"


class ThinWorkers(Handler):
    def __init__(self, loop, address, count):
        self.loop = loop
        self.address = parse_address(address)
        self.seen = set()
        self.duplicates = 0
        self.registered = 0
        self.conns = []
        for i in range(count):
            conn = Connection.dial(loop, parse_address(address), self, ROLE_WORKER, None)
            conn.data = ("thin-%d-%d" % (os.getpid(), i)).encode()
            self.conns.append(conn)
        loop.call_every(1.0, self._heartbeat)

    def connection_open(self, conn):
        if type(conn.data) is tuple:  # a processor's
            conn.send(ProcessorConnect(conn.data[1], TOKEN, os.getpid()))
        else:
            conn.send(WorkerConnect(conn.data, conn.data.decode(), 1000, "", os.getpid(), "", 0.0, TOKEN))

    def message_received(self, conn, msg):
        kind = type(msg)
        if kind is ProcessorTask:
            task_id = bytes(msg.task_id)
            if task_id in self.seen:
                self.duplicates += 1
            self.seen.add(task_id)
            conn.send(TaskResult(task_id, STATUS_OK, pickle.dumps(task_id), ""))
        elif kind is ProcessorCancel:
            conn.send(TaskResult(msg.task_id, STATUS_CANCELLED, b"", "cancelled"))
        elif kind is WorkerFetchObject:
            conn.send(WorkerObjectReady(msg.object_id, True))
        elif kind is WorkerConnectReply:
            self.registered += 1
            processor = Connection.dial(self.loop, self.address, self, ROLE_WORKER, None)
            processor.data = ("processor", conn.data)

    def connection_closed(self, conn, reason):
        pass

    def _heartbeat(self):
        for conn in self.conns:
            if conn.opened:
                conn.send(WorkerHeartbeat(time.time(), 0, 0, 0.0))


def main(argv):
    address, count, seconds, report = argv[1], int(argv[2]), float(argv[3]), argv[4]
    loop = EventLoop()
    workers = ThinWorkers(loop, address, count)
    signal.signal(signal.SIGTERM, lambda *_: loop.call_soon_threadsafe(loop.stop))
    loop.call_later(seconds, loop.stop)
    loop.run()
    with open(report, "w") as f:
        json.dump({"tasks": len(workers.seen), "duplicates": workers.duplicates,
                   "workers": workers.registered}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
