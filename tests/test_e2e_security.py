"""End to end: hostile or broken peers, and the shared-secret handshake.

Raw sockets play the misbehaving peers; a real Client checks that everyone else is still
served. The auth tests use a combo with a key, and a scheduler + cluster started from the
command line so that the scheduler's own log can be read.
"""

import os
import socket
import struct
import sys

import pytest

from e2e_support import exit_code_within, free_port_pair, subprocess_env
from scaler import Client
from scaler.io.address import parse_address
from scaler.protocol.codec import decode, encode, frame_length
from scaler.protocol.handshake import HANDSHAKE_FRAME_LIMIT, NONCE_BYTES, ConnectorHandshake
from scaler.protocol.messages import (MAGIC, PROTOCOL_VERSION, ROLE_CLIENT, ROLE_WORKER, Hello, ProcessorConnect, Proof,
                                      Rejected, Welcome, WorkerConnect, WorkerConnectReply)
from scaler.utility.exceptions import AuthenticationError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="e2e tests need Linux")

TIMEOUT = 60
HUNDRED_GB = 100 * 10 ** 9
KEY = "s3cret"


def add(a, b):
    return a + b


def length(data):
    return len(data)


# --- raw peers ------------------------------------------------------------------------------

def raw_connect(address, timeout=10.0):
    parsed = parse_address(address)
    return socket.create_connection((parsed.host, parsed.port), timeout=timeout)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("peer closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def recv_message(sock):
    length_ = frame_length(recv_exact(sock, 8), HANDSHAKE_FRAME_LIMIT)
    return decode(bytearray(recv_exact(sock, length_)))


def raw_handshake(sock, key=None, role=ROLE_CLIENT):
    """Complete the real handshake over a blocking socket; the connection is then open."""
    hs = ConnectorHandshake(role, key)
    sock.sendall(encode(hs.start()))
    while not hs.done:
        step = hs.receive(recv_message(sock))
        assert step.failure is None, step.failure
        if step.reply is not None:
            sock.sendall(encode(step.reply))


def assert_dropped(sock, timeout=15.0):
    """The server closes the connection (EOF or reset) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            # Anything the server says before closing is fine (a Rejected frame, say).
    except ConnectionResetError:
        return
    except socket.timeout:
        raise AssertionError("the server kept the connection open for %.0fs" % timeout)


def test_half_frame_does_not_delay_other_clients(shared_combo):
    stalled = []
    try:
        for address in (shared_combo.get_address(), shared_combo.object_storage_address):
            # Before the handshake: a frame header announcing 1000 bytes, then 3 of them.
            sock = raw_connect(address)
            sock.sendall(struct.pack("<Q", 1000) + b"abc")
            stalled.append(sock)
            # After a completed handshake: the same, from an accepted peer.
            sock = raw_connect(address)
            raw_handshake(sock)
            sock.sendall(struct.pack("<Q", 1000) + b"abc")
            stalled.append(sock)

        with Client(shared_combo.get_address()) as client:
            assert client.submit(add, 1, 2).result(timeout=30) == 3
            assert client.map(add, range(100), range(100)) == [2 * i for i in range(100)]
            big = b"x" * (1 << 20)  # goes through object storage, where a stalled peer also sits
            assert client.submit(length, big).result(timeout=30) == 1 << 20
            ref = client.send_object(big)
            assert client.submit(length, ref).result(timeout=30) == 1 << 20
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize("stage", ["before_handshake", "after_handshake"])
@pytest.mark.parametrize("port", ["scheduler", "object_storage"])
def test_100gb_frame_announcement_is_dropped(shared_combo, stage, port):
    address = shared_combo.get_address() if port == "scheduler" else shared_combo.object_storage_address
    with raw_connect(address) as sock:
        if stage == "after_handshake":
            raw_handshake(sock)
        sock.sendall(struct.pack("<Q", HUNDRED_GB))
        assert_dropped(sock)
    with Client(shared_combo.get_address()) as client:  # and nothing else suffered
        assert client.submit(add, 2, 2).result(timeout=30) == 4


def test_garbage_instead_of_a_handshake_is_dropped(shared_combo):
    with raw_connect(shared_combo.get_address()) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_dropped(sock)


# --- shared secret --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed_combo():
    from scaler import SchedulerClusterCombo

    combo = SchedulerClusterCombo(n_workers=1, auth_key=KEY, logging_level="WARNING")
    try:
        yield combo
    finally:
        combo.shutdown()


def test_client_with_the_key_works(keyed_combo):
    with Client(keyed_combo.get_address(), auth_key=KEY) as client:
        assert client.submit(add, 20, 22).result(timeout=TIMEOUT) == 42
        ref = client.send_object(b"y" * 100000)
        assert client.submit(length, ref).result(timeout=TIMEOUT) == 100000
    with Client(keyed_combo.get_address(), auth_key=KEY.encode()) as client:  # bytes work too
        assert client.submit(add, 1, 1).result(timeout=TIMEOUT) == 2


def test_client_with_a_wrong_key_is_refused(keyed_combo):
    with pytest.raises(AuthenticationError) as info:
        Client(keyed_combo.get_address(), auth_key="not-the-key", timeout_seconds=10)
    assert "authentication" in str(info.value).lower()


def test_client_without_a_key_is_refused(keyed_combo):
    with pytest.raises(AuthenticationError) as info:
        Client(keyed_combo.get_address(), timeout_seconds=10)
    assert "key" in str(info.value).lower()


def test_forged_proof_is_rejected(keyed_combo):
    """A peer that skips checking the server's proof and sends a made-up one of its own."""
    with raw_connect(keyed_combo.get_address()) as sock:
        sock.sendall(encode(Hello(MAGIC, PROTOCOL_VERSION, ROLE_CLIENT, b"n" * NONCE_BYTES)))
        welcome = recv_message(sock)
        assert isinstance(welcome, Welcome) and welcome.auth_required
        sock.sendall(encode(Proof(b"\0" * 32)))
        reply = recv_message(sock)
        assert isinstance(reply, Rejected)
        assert "auth" in reply.reason.lower()
        assert_dropped(sock)


def test_scheduler_logs_refusal_of_a_wrong_key(procs):
    port = free_port_pair()
    address = "tcp://127.0.0.1:%d" % port
    env = subprocess_env()
    scheduler = procs.python(["-m", "scaler.scheduler", address, "--auth-key", KEY], "scheduler", env=env)
    cluster = procs.python(["-m", "scaler.cluster", address, "-n", "1", "--auth-key", KEY], "cluster", env=env)

    with Client(address, auth_key=KEY) as client:
        try:
            assert client.submit(add, 3, 4).result(timeout=TIMEOUT) == 7
        except Exception:  # show what the processes said, so a rare failure can be understood
            raise AssertionError("no result:\n--- scheduler ---\n%s\n--- cluster ---\n%s"
                                 % (scheduler.output.text(), cluster.output.text()))

    with pytest.raises(AuthenticationError) as info:
        Client(address, auth_key="wrong", timeout_seconds=10)
    assert "authentication" in str(info.value).lower()
    line = scheduler.output.wait_for(r"(?i)refus.*auth", 15)
    assert "WARNING" in line or "ERROR" in line, line

    # A forged proof is detected by the scheduler itself, which names the cause.
    with raw_connect(address) as sock:
        sock.sendall(encode(Hello(MAGIC, PROTOCOL_VERSION, ROLE_CLIENT, b"n" * NONCE_BYTES)))
        recv_message(sock)
        sock.sendall(encode(Proof(b"\0" * 32)))
        assert isinstance(recv_message(sock), Rejected)
    scheduler.output.wait_for(r"(?i)refused .*wrong auth key", 15)

    with pytest.raises(AuthenticationError):
        Client(address, timeout_seconds=10)

    for child in (cluster, scheduler):
        child.popen.send_signal(15)
    assert exit_code_within(cluster, 20) == 0, cluster.output.text()
    assert exit_code_within(scheduler, 20) == 0, scheduler.output.text()
    assert "s3cret" not in scheduler.output.text()  # the key itself is never logged


# --- memory a peer can make the scheduler commit ------------------------------------------------

# Regression: Connection._parse used to allocate bytearray(length) as soon as a frame header
# announcing >= 1 MiB arrived, before any of the body: anyone who completed the handshake
# could make the scheduler commit up to 4 GiB per 8-byte header. Big frames now land in an
# anonymous mapping whose pages are committed only as the bytes arrive.


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def test_announced_frame_does_not_commit_memory_before_its_bytes_arrive(make_combo):
    combo = make_combo(n_workers=1)
    scheduler_pid = combo._scheduler.pid
    with Client(combo.get_address()) as client:  # warm up: the scheduler's own baseline
        assert client.submit(add, 1, 1).result(timeout=TIMEOUT) == 2
    before = rss_bytes(scheduler_pid)
    announced = 1024 ** 3  # 1 GiB: well under the 4 GiB frame limit
    with raw_connect(combo.get_address()) as sock:
        raw_handshake(sock)
        sock.sendall(struct.pack("<Q", announced) + b"abc")
        # A full round trip through the scheduler: by then it has read that header.
        with Client(combo.get_address()) as client:
            assert client.submit(add, 2, 2).result(timeout=TIMEOUT) == 4
        grown = rss_bytes(scheduler_pid) - before
    assert grown < 256 * 1024 ** 2, "the scheduler committed %d MiB for an 8-byte header" % (grown >> 20)


# --- a hand-rolled client that sends what a real one never would ---------------------------------

def recv_open_message(sock, limit=1 << 30):
    return decode(bytearray(recv_exact(sock, frame_length(recv_exact(sock, 8), limit))))


def raw_client(address):
    """A connected, registered client speaking the protocol by hand over a blocking socket."""
    from scaler.protocol.messages import ClientConnect, ClientConnectReply

    sock = raw_connect(address, timeout=TIMEOUT)
    raw_handshake(sock)
    sock.sendall(encode(ClientConnect(b"raw-client-" + struct.pack("<d", id(sock)))))
    reply = recv_open_message(sock)
    assert isinstance(reply, ClientConnectReply), reply
    return sock


def await_result(sock, task_id):
    from scaler.protocol.messages import TaskResult

    while True:
        msg = recv_open_message(sock)
        if isinstance(msg, TaskResult) and msg.task_id == task_id:
            return msg


@pytest.mark.parametrize("case", ["unknown_function", "garbage_call", "call_of_wrong_type"])
def test_bad_task_fails_alone_and_the_worker_survives(make_combo, case):
    import cloudpickle

    from scaler.protocol.call import packed_call
    from scaler.protocol.messages import STATUS_OK, Call, TaskSubmit

    combo = make_combo(n_workers=1)
    with Client(combo.get_address()) as client:  # the worker's processor is up and has run a task
        first_pid = client.submit(os.getpid).result(timeout=TIMEOUT)
    sock = raw_client(combo.get_address())
    try:
        args = cloudpickle.dumps(((), {}))
        if case == "unknown_function":
            call = packed_call(b"", args)
        elif case == "garbage_call":
            call = b"\xff" * 100
        else:  # a well-formed frame of another message type where a Call belongs
            call = encode(Call(b"", b"", [], []))[8:][:1] + b"\0" * 40
        task_id = b"T" * 16
        sock.sendall(encode(TaskSubmit(task_id, 0, b"\0" * 32, call, "", 0)))
        result = await_result(sock, task_id)
        assert result.status != STATUS_OK
        assert result.detail, "a failure must say why"
    finally:
        sock.close()
    with Client(combo.get_address()) as client:
        assert client.submit(add, 2, 3).result(timeout=TIMEOUT) == 5
        assert client.submit(os.getpid).result(timeout=TIMEOUT) == first_pid, "the processor was replaced"


def test_unknown_message_type_after_handshake_is_dropped(shared_combo):
    with raw_connect(shared_combo.get_address()) as sock:
        raw_handshake(sock)
        sock.sendall(struct.pack("<Q", 5) + b"\xfe\x00\x00\x00\x00")
        assert_dropped(sock)
    with raw_connect(shared_combo.object_storage_address) as sock:
        raw_handshake(sock)
        sock.sendall(struct.pack("<Q", 5) + b"\xfe\x00\x00\x00\x00")
        assert_dropped(sock)


def test_a_processor_is_admitted_only_for_a_worker_with_that_worker_s_token(make_combo):
    """A processor's connection gets its worker's tasks: the scheduler takes it only for a
    registered worker, with the token that worker announced."""
    combo = make_combo(n_workers=1)
    address = combo.get_address()
    worker_id, token = b"w" * 16, os.urandom(16)
    with raw_connect(address) as agent:
        raw_handshake(agent, role=ROLE_WORKER)
        agent.sendall(encode(WorkerConnect(worker_id, "fake", 10, "", os.getpid(), "", 0.0, token)))
        assert type(recv_message(agent)) is WorkerConnectReply
        for claimed, shown in ((b"x" * 16, token), (worker_id, os.urandom(16)), (worker_id, b"")):
            with raw_connect(address) as sock:
                raw_handshake(sock, role=ROLE_WORKER)
                sock.sendall(encode(ProcessorConnect(claimed, shown, 1)))
                assert_dropped(sock)
        with raw_connect(address) as sock:
            raw_handshake(sock, role=ROLE_WORKER)
            sock.sendall(encode(ProcessorConnect(worker_id, token, 1)))
            sock.settimeout(1.0)
            with pytest.raises(socket.timeout):
                sock.recv(1)  # kept: it would be sent the fake worker's tasks
    with Client(address) as client:  # (the fake worker is gone: the real one serves)
        assert client.submit(add, 2, 3).result(timeout=TIMEOUT) == 5
