"""A separate object storage server that dies: a named error, no hang; back when it returns.

Layout: ``scaler_object_storage_server``, a scheduler pointed at it (``-osa``), one worker
pool, all from the command line. The client's connection to storage breaks: its pending
and later calls fail with ``DisconnectedError`` naming object storage. The scheduler and
the workers keep running and retry quietly (one warning, then one every 30 s, then one
line when it is back); a storage server started again on the same address is used again.
"""

import re
import sys
import time

import pytest

from e2e_support import free_port_pair
from scaler import Client
from scaler.io.address import free_tcp_port
from scaler.utility.exceptions import DisconnectedError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="e2e tests need Linux")

TIMEOUT = 60


def add(a, b):
    return a + b


def test_object_storage_death_is_named_and_survived(procs):
    port = free_port_pair()
    storage_port = free_tcp_port("127.0.0.1")
    address = "tcp://127.0.0.1:%d" % port
    storage_address = "tcp://127.0.0.1:%d" % storage_port
    storage = procs.python(["-m", "scaler.object_storage", storage_address], "storage")
    storage.output.wait_for(r"listening", TIMEOUT)
    scheduler = procs.python(["-m", "scaler.scheduler", address, "-osa", storage_address], "scheduler")
    scheduler.output.wait_for(r"listening on", TIMEOUT)
    cluster = procs.python(["-m", "scaler.cluster", address, "-n", "1"], "cluster")
    with Client(address) as client:
        assert client.submit(add, 1, 2).result(timeout=TIMEOUT) == 3
        storage.kill_group()
        with pytest.raises(DisconnectedError, match="object storage"):
            client.submit(add, 2, 3).result(timeout=TIMEOUT)
    scheduler.output.wait_for(r"object storage at \S+ unreachable \(", TIMEOUT)
    cluster.output.wait_for(r"object storage unreachable \(", TIMEOUT)
    time.sleep(3)  # several retries
    assert scheduler.popen.poll() is None and cluster.popen.poll() is None
    for child in (scheduler, cluster):  # one warning, not one per retry
        assert len([line for line in child.output.lines if re.search(r"unreachable \(", line)]) == 1, \
            child.output.text()

    storage = procs.python(["-m", "scaler.object_storage", storage_address], "storage again")
    storage.output.wait_for(r"listening", TIMEOUT)
    scheduler.output.wait_for(r"unreachable: back after", TIMEOUT)
    cluster.output.wait_for(r"unreachable: back after", TIMEOUT)
    with Client(address) as client:
        assert client.submit(add, 5, 5).result(timeout=TIMEOUT) == 10
