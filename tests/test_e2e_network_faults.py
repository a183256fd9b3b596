"""Network faults between a worker and the scheduler, through a real TCP proxy.

A worker reaches the scheduler only through ``netfault.FaultProxy``; a client runs a batch
while the proxy drops a connection mid-frame, stalls it for 10 s, resets it, or
half-closes it. Each case ends in a reconnect (or the scheduler re-running the worker's
tasks) and the client's results are complete and correct.
"""

import sys
import time

import pytest

from e2e_support import free_port_pair, subprocess_env
from netfault import FaultProxy
from scaler import Client

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="e2e tests need Linux")

TIMEOUT = 90


def slow_square(x):
    time.sleep(0.02)
    return x * x


@pytest.mark.parametrize("fault", ["drop_mid_frame", "stall", "reset", "half_close"])
def test_a_batch_completes_through_a_broken_worker_link(procs, fault):
    port = free_port_pair()
    address = "tcp://127.0.0.1:%d" % port
    env = subprocess_env()
    scheduler = procs.python(["-m", "scaler.scheduler", address, "-ll", "INFO", "--monitor-address",
                              "tcp://127.0.0.1:%d" % free_port_pair()], "scheduler", env=env)
    proxy = FaultProxy(("127.0.0.1", port), stall_seconds=10.0)
    try:
        procs.python(["-m", "scaler.cluster", proxy.address, "-n", "1", "-ll", "INFO", "-hi", "1"], "cluster",
                     env=env)
        with Client(address, timeout_seconds=TIMEOUT) as client:
            assert client.submit(slow_square, 3).result(timeout=TIMEOUT) == 9
            futures = client.map_futures(slow_square, range(300))
            time.sleep(1.0)  # part of the batch is done, part is queued on the worker
            assert proxy.fault(fault) >= 1, "the worker's connection did not go through the proxy"
            results = [f.result(timeout=TIMEOUT) for f in futures]
            assert results == [x * x for x in range(300)]
            # And the link works again afterwards (after a reconnect where it broke).
            assert client.map(slow_square, range(20)) == [x * x for x in range(20)]
        if fault != "stall":
            assert proxy.accepted >= 2, "the worker did not reconnect"
            scheduler.output.wait_for(r"(?i)worker .*(disconnect|left|lost|closed)|no heartbeat|connection", 5)
    finally:
        proxy.close()
