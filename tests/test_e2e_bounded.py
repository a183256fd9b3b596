"""Bounded memory and descriptors, whatever peers do (issue: hardening).

Each test runs a real scheduler from the command line (so its log and /proc figures can be
read), a real worker, misbehaving peers on raw sockets or in stopped processes, and a
well-behaved Client beside them whose results must stay complete. Every offender must
leave one line in the scheduler's log naming its address.
"""

import os
import signal
import socket
import struct
import sys
import textwrap
import time

import pytest

from e2e_support import free_port_pair, subprocess_env
from scaler import Client
from scaler.protocol.codec import encode
from scaler.protocol.messages import ClientConnect, Heartbeat
from test_e2e_security import assert_dropped, raw_connect, raw_handshake, recv_open_message, rss_bytes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; e2e tests need Linux")

TIMEOUT = 60
MiB = 1024 * 1024


def add(a, b):
    return a + b


def sixty_kb(i):
    return bytes(60 * 1024)


def start_cluster(procs, nofile=None):
    port = free_port_pair()
    address = "tcp://127.0.0.1:%d" % port
    env = subprocess_env()
    argv = ["-m", "scaler.scheduler", address, "--monitor-address", "tcp://127.0.0.1:%d" % free_port_pair()]
    if nofile is not None:  # the scheduler under a low descriptor limit, set in its own process
        argv = ["-c", "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (%d, %d)); "
                      "sys.argv = ['scaler_scheduler'] + sys.argv[1:]; "
                      "runpy.run_module('scaler.scheduler', run_name='__main__')" % (nofile, nofile)] + argv[2:]
    scheduler = procs.python(argv, "scheduler", env=env)
    procs.python(["-m", "scaler.cluster", address, "-n", "1", "--logging-level", "WARNING"], "cluster", env=env)
    with Client(address, timeout_seconds=TIMEOUT) as client:
        assert client.submit(add, 1, 1).result(timeout=TIMEOUT) == 2
    return address, scheduler


def well_served(address, n=50):
    with Client(address, timeout_seconds=TIMEOUT) as client:
        assert client.map(add, range(n), range(n)) == [2 * i for i in range(n)]


def test_an_authenticated_peer_that_never_registers_is_closed_and_logged(procs):
    address, scheduler = start_cluster(procs)
    with raw_connect(address) as idle:
        raw_handshake(idle)
        local = "%s:%d" % idle.getsockname()[:2]
        started = time.monotonic()
        assert_dropped(idle, timeout=20)
        assert 8 <= time.monotonic() - started <= 20
    line = scheduler.output.wait_for(r"closing %s: authenticated but did not register" % local, 5)
    assert "WARNING" in line
    well_served(address)


def test_a_partial_frame_that_stops_coming_is_dropped(procs):
    address, scheduler = start_cluster(procs)
    pid = scheduler.popen.pid
    before = rss_bytes(pid)
    with raw_connect(address) as sock:
        raw_handshake(sock)
        sock.sendall(encode(ClientConnect(b"partial-frame-client")))
        recv_open_message(sock)
        # A registered peer announces 512 MiB, sends 64 MiB of it, and goes quiet.
        sock.sendall(struct.pack("<Q", 512 * MiB))
        chunk = bytes(MiB)
        for _ in range(64):
            sock.sendall(chunk)
        local = "%s:%d" % sock.getsockname()[:2]
        well_served(address)  # meanwhile, everyone else is served
        assert_dropped(sock, timeout=45)
    scheduler.output.wait_for(r"closing %s: a frame it started sending made no progress" % local, 5)
    deadline = time.monotonic() + 10
    while rss_bytes(pid) > before + 32 * MiB and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rss_bytes(pid) <= before + 32 * MiB, "the partial frame's memory was not given back"


def test_a_peer_that_sends_and_never_reads_cannot_grow_the_scheduler(procs):
    address, scheduler = start_cluster(procs)
    pid = scheduler.popen.pid
    before = rss_bytes(pid)
    flood = encode(Heartbeat(0.0)) * 4096
    with raw_connect(address) as sock:
        raw_handshake(sock)
        sock.sendall(encode(ClientConnect(b"heartbeat-flooder")))
        sock.setblocking(False)
        deadline = time.monotonic() + 15
        sent = 0
        pending = memoryview(flood)
        while time.monotonic() < deadline:
            try:
                n = sock.send(pending)
            except BlockingIOError:
                time.sleep(0.01)  # the scheduler stopped reading us: our own buffer is full
                continue
            sent += n
            pending = pending[n:] if n < len(pending) else memoryview(flood)
        grown = rss_bytes(pid) - before
        assert grown < 64 * MiB, "scheduler grew by %d MiB while a peer flooded it" % (grown >> 20)
        well_served(address)
    assert sent > 0


STALLED_CLIENT = textwrap.dedent("""
    import os, signal, sys, time
    from scaler import Client

    def sixty_kb(i):
        if i == 0:
            time.sleep(3)  # holds the one worker while this client sends the whole batch
        return bytes(60 * 1024)

    client = Client(sys.argv[1], timeout_seconds=600)
    futures = client.map_futures(sixty_kb, range(int(sys.argv[2])))
    time.sleep(1.5)  # the I/O thread has sent every task by now
    print("submitted", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)  # a stalled client: it never reads its results
""")


def test_a_stopped_client_is_dropped_before_its_results_grow_the_scheduler(procs, tmp_path):
    address, scheduler = start_cluster(procs)
    pid = scheduler.popen.pid
    before = rss_bytes(pid)
    script = tmp_path / "stalled_client.py"
    script.write_text(STALLED_CLIENT)
    stalled = procs.python([str(script), address, "4000"], "stalled-client")  # 4000 x 60 KB = 234 MiB
    stalled.output.wait_for("submitted", TIMEOUT)
    line = scheduler.output.wait_for(r"dropping \S+: it stopped reading \(\d+ MiB waiting", TIMEOUT)
    assert "WARNING" in line
    well_served(address)  # the other clients are still served
    grown = rss_bytes(pid) - before
    assert grown < 160 * MiB, "scheduler grew by %d MiB for a client that stopped reading" % (grown >> 20)
    os.kill(stalled.popen.pid, signal.SIGKILL)


def test_out_of_descriptors_the_scheduler_neither_spins_nor_locks_clients_out(procs):
    address, scheduler = start_cluster(procs, nofile=96)
    pid = scheduler.popen.pid
    squatters = []
    try:
        for _ in range(300):  # connect and say nothing: far more than the scheduler may hold
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", int(address.rsplit(":", 1)[1])))
            squatters.append(sock)
        time.sleep(1.0)
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu():
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        used, t0 = cpu(), time.monotonic()
        time.sleep(3.0)
        share = (cpu() - used) / (time.monotonic() - t0)
        assert share < 0.3, "the scheduler spent %.0f %% of a core while out of descriptors" % (share * 100)
        well_served(address, 20)  # a legitimate client still gets in (an idle squatter is closed for it)
    finally:
        for sock in squatters:
            sock.close()
    text = scheduler.output.text()
    assert "out of file descriptors" in text
    assert text.count("out of file descriptors") <= 5, "logged once per interval, not per attempt"


def test_object_storage_owner_is_the_connection_and_its_objects_go_with_it(shared_combo):
    from scaler.protocol.messages import (ObjectDeleteOwner, ObjectGet, ObjectGetReply, ObjectPut, ObjectPutReply,
                                          ObjectShmOffer)

    storage = shared_combo.object_storage_address
    first, second = b"o" * 32, b"p" * 32
    with raw_connect(storage) as sock:
        raw_handshake(sock)
        assert type(recv_open_message(sock)) is ObjectShmOffer  # every client is offered shared memory first
        sock.sendall(encode(ObjectPut(first, b"Client|someone", b"x" * 1000)))
        assert recv_open_message(sock) == ObjectPutReply(first, "")
        sock.sendall(encode(ObjectPut(second, b"Client|somebody-else", b"y" * 1000)))  # not its own id
        reply = recv_open_message(sock)
        assert isinstance(reply, ObjectPutReply) and "its own id" in reply.error
        sock.sendall(encode(ObjectGet(first)))
        assert recv_open_message(sock).found
    with raw_connect(storage) as other:  # the first connection is gone: so is what it stored
        raw_handshake(other)
        assert type(recv_open_message(other)) is ObjectShmOffer
        deadline = time.monotonic() + 10
        while True:
            other.sendall(encode(ObjectGet(first)))
            reply = recv_open_message(other)
            assert isinstance(reply, ObjectGetReply)
            if not reply.found:
                break
            assert time.monotonic() < deadline, "an object outlived the connection that stored it"
            time.sleep(0.05)
        other.sendall(encode(ObjectDeleteOwner(b"Client|anyone")))  # only the scheduler may do that
        assert_dropped(other)
    well_served(shared_combo.get_address())
