"""The scheduler's status stream, end to end: what a snapshot holds, who may read it, and
that a subscriber that stops reading never slows the scheduler down."""

import socket
import sys
import time
import types

import pytest

from e2e_support import free_port_pair, subprocess_env
from scaler import Client, monitor
from scaler.monitor import MonitorError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="e2e tests need Linux")

TIMEOUT = 60


def square(x):
    return x * x


def test_a_snapshot_describes_the_cluster(make_combo):
    combo = make_combo(n_workers=2)
    with Client(combo.get_address()) as client:
        assert client.map(square, range(300)) == [x * x for x in range(300)]
        # (worker figures come with their heartbeats: wait for one from each)
        status = monitor.wait_for(combo.monitor_address, lambda s: s["totals"]["finished"] >= 300
                                  and len(s["workers"]) == 2 and len(s["clients"]) == 1
                                  and all(w["processor_pid"] > 0 for w in s["workers"]), timeout=TIMEOUT)
    assert status["version"] == 1 and status["time"] > 0
    scheduler = status["scheduler"]
    assert scheduler["rss"] > 0 and scheduler["uptime"] > 0 and scheduler["cpu"] >= 0
    assert scheduler["monitor_address"] == combo.monitor_address
    assert set(status["tasks"]) >= {"waiting", "queued", "assigned", "moving", "cancelling", "running", "total"}
    assert set(status["rates"]) == {"submitted", "finished", "failed", "cancelled"}
    assert status["totals"]["submitted"] >= 300 and status["totals"]["failed"] == 0
    assert sum(w["done"] for w in status["workers"]) >= 300
    for worker in status["workers"]:
        assert worker["pid"] > 0 and worker["processor_pid"] > 0 and worker["processor_rss"] > 0
        assert worker["agent_rss"] > 0 and worker["heartbeat_age"] is not None
        assert worker["host"] and worker["name"] and worker["queue_size"] > 0
    assert status["clients"][0]["tasks"] == 0
    assert status["object_storage"]["in_process"] is True and status["object_storage"]["objects"] >= 1
    assert status["managers"] and status["managers"][0]["mode"] == "fixed"
    assert status["scaling"]["allocate"] in ("even_load", "capability")
    assert status["waiting_for_capabilities"] == []


def test_the_monitor_needs_the_key_when_the_cluster_has_one(make_combo):
    combo = make_combo(n_workers=1, auth_key="s3cret")
    with pytest.raises(MonitorError):
        monitor.snapshot(combo.monitor_address, auth_key="wrong", timeout=TIMEOUT)
    with pytest.raises(MonitorError):
        monitor.snapshot(combo.monitor_address, auth_key=b"", timeout=TIMEOUT)
    assert "workers" in monitor.snapshot(combo.monitor_address, auth_key="s3cret", timeout=TIMEOUT)


class _SmallReceiveBuffer(socket.socket):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window


def test_a_subscriber_that_stops_reading_is_dropped_and_slows_nobody(procs, monkeypatch):
    port = free_port_pair()
    address = "tcp://127.0.0.1:%d" % port
    monitor_address = "tcp://127.0.0.1:%d" % (port + 2)
    scheduler = procs.python(["-m", "scaler.scheduler", address, "--status-report-interval-seconds", "0.01"],
                             "scheduler", env=subprocess_env())
    scheduler.output.wait_for("listening on", TIMEOUT)
    procs.python(["-m", "scaler.cluster", address, "-n", "2"], "cluster", env=subprocess_env())
    # A subscriber with a tiny receive buffer that completes the handshake and never reads again.
    sockets = types.SimpleNamespace(**{name: getattr(socket, name) for name in dir(socket) if not name.startswith("_")})
    sockets.socket = _SmallReceiveBuffer
    monkeypatch.setattr(monitor, "socket", sockets)
    stalled = monitor.Subscription(monitor_address, timeout=TIMEOUT)
    monkeypatch.undo()
    try:
        with Client(address) as client:
            started = time.monotonic()
            while time.monotonic() - started < 3:  # well-behaved work goes on meanwhile
                assert client.map(square, range(200)) == [x * x for x in range(200)]
            scheduler.output.wait_for(r"dropping monitor subscriber .*stopped reading", TIMEOUT)
            assert client.submit(square, 7).result(timeout=TIMEOUT) == 49
            # a reading subscriber is served all along
            assert len(monitor.snapshot(monitor_address, timeout=TIMEOUT)["workers"]) == 2
    finally:
        stalled.close()
