"""Connection (scaler.io.connection) over a socketpair, driven by a real EventLoop.

No subprocesses: both ends live in this process, on one loop. Every wait runs the loop
with a deadline, and a SIGALRM backstop turns a callback that never returns (a spinning
flush, say) into a failure instead of a hung test run.
"""

import os
import signal
import socket
import sys
import time

import pytest

from scaler.io import connection as connection_module
from scaler.io.connection import DEFAULT_MAX_FRAME_BYTES, Connection, Handler
from scaler.io.loop import EventLoop
from scaler.protocol import messages as m
from scaler.protocol.codec import FRAME_HEADER, decode, encode, encode_batch, encode_parts
from scaler.protocol.framing import BIG_FRAME
from scaler.protocol.handshake import HANDSHAKE_FRAME_LIMIT

TIMEOUT = 10.0


class Recorder(Handler):
    def __init__(self):
        self.opened = 0
        self.messages = []
        self.closed = None  # the reason, once closed

    def connection_open(self, conn):
        self.opened += 1

    def message_received(self, conn, msg):
        self.messages.append(msg)

    def connection_closed(self, conn, reason):
        assert self.closed is None, "closed twice"
        self.closed = reason


class _Stuck(Exception):
    pass


def _alarm(_signum, _frame):
    raise _Stuck("a loop callback did not return")


def run_until(loop, predicate, timeout=TIMEOUT):
    """Run ``loop`` until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout

    def check():
        if predicate() or time.monotonic() >= deadline:
            loop.stop()

    timer = loop.call_every(0.002, check)
    use_alarm = hasattr(signal, "setitimer")
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout + 5)
    try:
        loop.run()
    finally:
        timer.cancel()
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    assert predicate(), "not done within %.0f s" % timeout


@pytest.fixture
def loop():
    loop = EventLoop()
    yield loop
    loop.close()


def nonblocking_pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def connect(loop, acceptor_key=None, connector_key=None, role=m.ROLE_CLIENT, allowed=(m.ROLE_CLIENT,),
            acceptor_max=DEFAULT_MAX_FRAME_BYTES):
    """An accepting and a dialling Connection on the two ends of a socketpair, not yet run."""
    a_sock, c_sock = nonblocking_pair()
    acceptor, connector = Recorder(), Recorder()
    a = Connection(loop, a_sock, acceptor, peer="connector", auth_key=acceptor_key, allowed_roles=allowed,
                   max_frame_bytes=acceptor_max)
    c = Connection(loop, c_sock, connector, peer="acceptor", auth_key=connector_key, role=role)
    return a, acceptor, c, connector


def open_pair(loop, **kwargs):
    a, acceptor, c, connector = connect(loop, **kwargs)
    run_until(loop, lambda: a.opened and c.opened)
    return a, acceptor, c, connector


def rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pytest.skip("no /proc/self/status")


def pattern(n, seed=0):
    return (bytes((i * 7 + seed) % 256 for i in range(256)) * (n // 256 + 1))[:n]


def recv_frame(sock, timeout=TIMEOUT):
    """One frame read from a raw blocking socket."""
    sock.settimeout(timeout)

    def exact(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data
    (length,) = FRAME_HEADER.unpack(exact(FRAME_HEADER.size))
    return decode(exact(length))


# --- handshake ----------------------------------------------------------------------------------

@pytest.mark.parametrize("key", [None, b"s3cret"])
def test_handshake_opens_both_ends(loop, key):
    a, acceptor, c, connector = open_pair(loop, acceptor_key=key, connector_key=key)
    assert acceptor.opened == connector.opened == 1
    assert a.peer_role == m.ROLE_CLIENT
    assert a.failure is None and c.failure is None
    assert not a.closed and not c.closed and acceptor.closed is None


@pytest.mark.parametrize("acceptor_key, connector_key, words", [
    (b"right", b"wrong", "authentication"),
    (b"key", None, "requires an auth key"),
    (None, b"key", "does not use one"),
])
def test_key_mismatch_fails_both_ends(loop, acceptor_key, connector_key, words):
    a, acceptor, c, connector = connect(loop, acceptor_key=acceptor_key, connector_key=connector_key)
    c.send(m.Heartbeat(1.0))  # queued for after the handshake: must never be delivered
    run_until(loop, lambda: a.closed and c.closed)
    assert words in c.failure and connector.closed == c.failure
    assert a.failure is not None and acceptor.closed == a.failure
    assert not a.opened and not c.opened and acceptor.opened == connector.opened == 0
    assert acceptor.messages == [] and connector.messages == []


def test_role_not_served_is_refused_with_its_name(loop):
    a, acceptor, c, connector = connect(loop, role=m.ROLE_WORKER, allowed=(m.ROLE_CLIENT,))
    run_until(loop, lambda: a.closed and c.closed)
    assert "worker" in a.failure and "worker" in c.failure


def test_handshake_timeout(loop, monkeypatch):
    monkeypatch.setattr(connection_module, "HANDSHAKE_TIMEOUT_SECONDS", 0.2)
    a_sock, silent = nonblocking_pair()
    acceptor = Recorder()
    a = Connection(loop, a_sock, acceptor, peer="silent", allowed_roles=(m.ROLE_CLIENT,))
    c_sock, silent_acceptor = nonblocking_pair()
    connector = Recorder()
    c = Connection(loop, c_sock, connector, peer="silent acceptor", role=m.ROLE_CLIENT)
    started = time.monotonic()
    run_until(loop, lambda: a.closed and c.closed)
    assert time.monotonic() - started < 5
    assert "timed out" in acceptor.closed and "timed out" in connector.closed
    silent.close()
    silent_acceptor.close()


def test_handshake_timer_is_cancelled_once_open(loop, monkeypatch):
    monkeypatch.setattr(connection_module, "HANDSHAKE_TIMEOUT_SECONDS", 0.2)
    a, acceptor, c, connector = open_pair(loop)
    deadline = time.monotonic() + 0.5
    run_until(loop, lambda: time.monotonic() > deadline)
    assert not a.closed and not c.closed


# --- garbage and oversized frames ---------------------------------------------------------------

@pytest.mark.parametrize("garbage, words", [
    (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "exceeds the limit of %d" % HANDSHAKE_FRAME_LIMIT),
    (FRAME_HEADER.pack(3) + b"\xfe\x00\x00", "unknown message type"),
    (FRAME_HEADER.pack(0), "empty frame"),
    (encode(m.Hello(m.MAGIC, m.PROTOCOL_VERSION, m.ROLE_CLIENT, b"n" * 5000)), "exceeds the limit"),
])
def test_garbage_before_the_handshake_closes_with_a_protocol_error(loop, garbage, words):
    a_sock, raw = nonblocking_pair()
    acceptor = Recorder()
    a = Connection(loop, a_sock, acceptor, peer="raw", allowed_roles=(m.ROLE_CLIENT,))
    raw.setblocking(True)
    raw.sendall(garbage)
    run_until(loop, lambda: a.closed)
    assert acceptor.closed.startswith("protocol error from raw") and words in acceptor.closed
    assert acceptor.opened == 0
    raw.settimeout(TIMEOUT)
    assert raw.recv(1) == b""  # closed without an answer
    raw.close()


def test_non_handshake_message_first_is_rejected(loop):
    a_sock, raw = nonblocking_pair()
    acceptor = Recorder()
    a = Connection(loop, a_sock, acceptor, peer="raw", allowed_roles=(m.ROLE_CLIENT,))
    raw.setblocking(True)
    raw.sendall(encode(m.Heartbeat(1.0)))
    run_until(loop, lambda: a.closed)
    assert "Heartbeat" in a.failure and acceptor.messages == []
    reply = recv_frame(raw)  # the reason goes to the peer before the close
    assert isinstance(reply, m.Rejected)
    raw.close()


def test_oversized_frame_after_the_handshake_closes_with_a_protocol_error(loop):
    a, acceptor, c, connector = open_pair(loop, acceptor_max=1024)
    c.send(m.Heartbeat(1.0))
    c.send(m.ObjectPut(b"o", b"", b"x" * 2000))
    c.send(m.Heartbeat(2.0))
    run_until(loop, lambda: a.closed and c.closed)
    assert acceptor.messages == [m.Heartbeat(1.0)]
    assert acceptor.closed.startswith("protocol error from connector")
    assert "exceeds the limit of 1024 bytes" in acceptor.closed
    assert "closed by acceptor" in connector.closed


def test_malformed_frame_after_the_handshake_closes_with_a_protocol_error(loop):
    a, acceptor, c, connector = open_pair(loop)
    c.sock.sendall(FRAME_HEADER.pack(3) + b"\xfe\x00\x00")
    run_until(loop, lambda: a.closed)
    assert acceptor.closed.startswith("protocol error from connector")


# --- messages -----------------------------------------------------------------------------------

def test_round_trip(loop):
    a, acceptor, c, connector = open_pair(loop, acceptor_key=b"k", connector_key=b"k")
    submit = m.TaskSubmit(b"task", m.FLAG_NEEDS_OBJECTS, b"func", b"call \x00\xff", "gpu", -3)
    c.send(submit)
    run_until(loop, lambda: acceptor.messages)
    assert acceptor.messages == [submit]
    result = m.TaskResult(b"task", m.STATUS_OK, b"\x80\x04N.", "")
    a.send(result)
    run_until(loop, lambda: connector.messages)
    assert connector.messages == [result]


def test_many_small_frames_both_ways_in_order(loop):
    a, acceptor, c, connector = open_pair(loop)
    n = 20000
    for i in range(n):
        c.send(m.Heartbeat(float(i)))
        a.send(m.TaskCancel(b"%d" % i))
    run_until(loop, lambda: len(acceptor.messages) == n and len(connector.messages) == n)
    assert [x.sent_at for x in acceptor.messages] == [float(i) for i in range(n)]
    assert [x.task_id for x in connector.messages] == [b"%d" % i for i in range(n)]
    assert c.write_backlog == 0 and a.write_backlog == 0


def test_big_frames_mixed_with_small_ones(loop):
    a, acceptor, c, connector = open_pair(loop)
    payloads = [pattern(3 * BIG_FRAME + 1, 1), pattern(BIG_FRAME, 2), pattern(9 * BIG_FRAME, 3)]
    for i, payload in enumerate(payloads):
        c.send(m.Heartbeat(float(i)))
        c.send(m.ObjectPut(b"obj%d" % i, b"owner", payload))
    c.send(m.Heartbeat(99.0))
    run_until(loop, lambda: len(acceptor.messages) == 2 * len(payloads) + 1)
    got = acceptor.messages
    assert got[-1] == m.Heartbeat(99.0)
    for i, payload in enumerate(payloads):
        assert got[2 * i] == m.Heartbeat(float(i))
        put = got[2 * i + 1]
        assert put.object_id == b"obj%d" % i and put.owner_id == b"owner"
        assert type(put.payload) is memoryview and len(put.payload) == len(payload)
        assert put.payload == payload


@pytest.mark.parametrize("msg", [
    m.TaskResult(b"t", m.STATUS_OK, pattern(2 * BIG_FRAME), ""),
    m.ObjectPut(b"id", b"", pattern(BIG_FRAME + 3)),
    m.ObjectGetReply(b"id", True, b""),
])
def test_frame_ending_in_an_empty_field(loop, msg):
    """Regression: the sender spun forever on a big frame whose last buffer was empty."""
    a, acceptor, c, connector = open_pair(loop)
    c.send(msg)
    c.send(m.Heartbeat(1.0))
    run_until(loop, lambda: len(acceptor.messages) == 2)
    assert acceptor.messages == [msg, m.Heartbeat(1.0)]
    assert c.write_backlog == 0


def test_flush_gets_past_empty_buffers(loop):
    """The same regression one level down: the write queue drops empty buffers, even last."""
    a, acceptor, c, connector = open_pair(loop)
    empty = [b"", memoryview(b"")]
    parts = (empty + encode_parts(m.TaskResult(b"t", m.STATUS_OK, pattern(BIG_FRAME), "")) + empty
             + encode_parts(m.Heartbeat(2.0)) + empty)
    c._wbuf.extend(parts)
    c.write_backlog += sum(len(memoryview(p)) for p in parts)
    loop.want_flush(c)
    run_until(loop, lambda: len(acceptor.messages) == 2)
    assert acceptor.messages[1] == m.Heartbeat(2.0)
    assert not c._wbuf and c.write_backlog == 0


def test_frames_sent_before_the_handshake_completes_go_right_after_it(loop):
    """Regression: messages sent during the handshake were dropped."""
    a, acceptor, c, connector = connect(loop, acceptor_key=b"k", connector_key=b"k")
    c.send(m.Heartbeat(1.0))
    c.send(m.ObjectPut(b"big", b"", pattern(2 * BIG_FRAME)))
    a.send(m.HeartbeatEcho(3.0))
    assert not a.opened and not c.opened
    run_until(loop, lambda: len(acceptor.messages) == 2 and len(connector.messages) == 1)
    assert acceptor.messages[0] == m.Heartbeat(1.0) and acceptor.messages[1].object_id == b"big"
    assert connector.messages == [m.HeartbeatEcho(3.0)]
    c.send(m.Heartbeat(4.0))  # and later messages follow them
    run_until(loop, lambda: len(acceptor.messages) == 3)
    assert acceptor.messages[2] == m.Heartbeat(4.0)


@pytest.mark.skipif(sys.maxsize < 2 ** 33, reason="needs a 64-bit address space")
def test_announced_2_gib_frame_commits_no_memory(loop):
    """Regression: a header announcing a big frame used to commit its whole size at once."""
    a, acceptor, c, connector = open_pair(loop)
    before = rss_bytes()
    announced = 2 * 1024 ** 3
    c.sock.sendall(FRAME_HEADER.pack(announced) + b"abcdef")
    reader = a._reader
    run_until(loop, lambda: reader.receiving_big and len(reader.big_buffer()) == announced - 6)
    assert rss_bytes() - before < 16 * 1024 * 1024
    assert not a.closed
    c.close()  # the peer goes away mid-frame: the buffer is dropped with the connection
    run_until(loop, lambda: a.closed)
    assert "closed by connector" in acceptor.closed and not reader.receiving_big


def test_unhandled_error_in_the_handler_closes_the_connection(loop):
    a, acceptor, c, connector = open_pair(loop)

    def boom(conn, msg):
        raise RuntimeError("boom")
    acceptor.message_received = boom
    c.send(m.Heartbeat(1.0))
    run_until(loop, lambda: a.closed)
    assert acceptor.closed == "internal error handling Heartbeat"


class BatchRecorder(Recorder):
    batch_types = frozenset((m.TaskResult, m.TaskSubmit))

    def __init__(self):
        super().__init__()
        self.events = []

    def message_received(self, conn, msg):
        self.events.append(("one", msg))

    def batch_received(self, conn, msgs):
        self.events.append(("batch", list(msgs)))


def _frames(*items):
    """Frames written back to back: a message alone, or a list as one batch frame."""
    out = b""
    for item in items:
        parts = encode_batch(item) if isinstance(item, list) else encode_parts(item)
        out += b"".join(bytes(part) for part in parts)
    return out


def batch_reader(loop):
    """A Connection (no handshake) whose handler gathers TaskResult and TaskSubmit, and the
    raw socket that writes to it."""
    a_sock, c_sock = nonblocking_pair()
    handler = BatchRecorder()
    return Connection(loop, a_sock, handler, peer="writer", handshake=False), handler, c_sock


def test_messages_of_a_batch_type_read_together_reach_the_handler_as_one_list_in_order(loop):
    a, handler, c_sock = batch_reader(loop)
    results = [m.TaskResult(b"r%d" % i, m.STATUS_OK, b"x", "") for i in range(7)]
    submits = [m.TaskSubmit(b"s%d" % i, 0, b"f", b"c", "", 0) for i in range(2)]
    heartbeat = m.Heartbeat(1.0)
    more = [m.TaskSubmit(b"s%d" % i, 0, b"f", b"c", "", 0) for i in range(2, 4)]
    c_sock.sendall(_frames(results[0], results[1], heartbeat, results[2], [results[3], results[4]], results[5],
                           *submits, results[6], more))
    run_until(loop, lambda: sum(len(e[1]) if e[0] == "batch" else 1 for e in handler.events) == 12)
    assert handler.events == [("batch", results[:2]), ("one", heartbeat), ("batch", results[2:6]),
                              ("batch", submits), ("one", results[6]), ("batch", more)]
    assert a.opened and not a.closed
    c_sock.close()


def test_a_handler_that_closes_the_connection_on_a_batch_gets_nothing_after_it(loop):
    a, handler, c_sock = batch_reader(loop)

    def close_on_batch(conn, msgs):
        handler.events.append(("batch", list(msgs)))
        conn.close("enough")
    handler.batch_received = close_on_batch
    results = [m.TaskResult(b"r%d" % i, m.STATUS_OK, b"x", "") for i in range(3)]
    c_sock.sendall(_frames(results[0], results[1], m.Heartbeat(1.0), results[2]))
    run_until(loop, lambda: a.closed)
    assert handler.events == [("batch", results[:2])] and handler.closed == "enough"
    c_sock.close()


def test_messages_held_for_a_run_are_delivered_before_a_bad_frame_closes_the_connection(loop):
    """A processor's results read before a malformed frame are still results: losing them
    would fail a task that succeeded and run the others twice."""
    a, handler, c_sock = batch_reader(loop)
    results = [m.TaskResult(b"r%d" % i, m.STATUS_OK, b"x", "") for i in range(3)]
    c_sock.sendall(_frames(*results) + FRAME_HEADER.pack(3) + b"\xfe\x00\x00")  # a type nobody declared
    run_until(loop, lambda: a.closed)
    assert handler.events == [("batch", results)]
    assert handler.closed.startswith("protocol error")
    c_sock.close()


def test_an_error_in_a_batch_handler_closes_the_connection(loop):
    a, handler, c_sock = batch_reader(loop)

    def boom(conn, msgs):
        raise RuntimeError("boom")
    handler.batch_received = boom
    c_sock.sendall(_frames([m.TaskResult(b"a", m.STATUS_OK, b"", ""), m.TaskResult(b"b", m.STATUS_OK, b"", "")]))
    run_until(loop, lambda: a.closed)
    assert handler.closed == "internal error handling TaskResult"
    c_sock.close()


def test_a_handler_without_batch_types_gets_every_message_alone(loop):
    a, acceptor, c, connector = open_pair(loop)
    results = [m.TaskResult(b"r%d" % i, m.STATUS_OK, b"x", "") for i in range(50)]
    for result in results:
        c.send(result)  # (batched on the wire)
    run_until(loop, lambda: len(acceptor.messages) == 50)
    assert acceptor.messages == results


def test_without_handshake_the_connection_is_open_at_once(loop):
    left_sock, right_sock = nonblocking_pair()
    left, right = Recorder(), Recorder()
    a = Connection(loop, left_sock, left, peer="right", handshake=False)
    b = Connection(loop, right_sock, right, peer="left", handshake=False)
    assert a.opened and b.opened
    big = m.ProcessorObject(b"o", pattern(BIG_FRAME + 10))  # over the handshake cap: none applies
    a.send(big)
    run_until(loop, lambda: right.messages)
    assert right.messages == [big]


def test_peer_close_is_reported(loop):
    a, acceptor, c, connector = open_pair(loop)
    c.close("bye")
    assert connector.closed == "bye"
    run_until(loop, lambda: a.closed)
    assert acceptor.closed == "connection closed by connector"


def test_writes_from_another_thread_survive_a_full_socket_in_order(loop):
    """send_from_thread (a client's submit written by the caller's thread): when the peer
    does not read, a write is cut short; the rest goes first when the loop flushes, later
    frames queue behind it, and the peer gets every frame whole and in order."""
    import threading

    from scaler.protocol.codec import encode_parts

    a, acceptor, c, connector = open_pair(loop)
    c.write_lock = threading.RLock()
    sent, direct, partial = [], 0, 0
    with c.write_lock:  # the loop is not running: nobody reads, the socket fills up
        for i in range(200):
            msg = m.TaskSubmit(b"t%05d" % i, 0, b"f" * 32, pattern(50000, i), "", 0)
            if c.send_from_thread(encode_parts(msg)):
                direct += 1
                partial += bool(c._wbuf)
            else:
                c.send(msg)  # queued behind what is waiting, as the client falls back
            sent.append(msg)
    # The socket filled (some frames went to the queue); a write cut short leaves its rest
    # first in the queue, so every later one queues behind it (0 only if the socket filled
    # exactly at a frame's end).
    assert 1 <= direct < len(sent) and partial <= 1, (direct, partial)
    run_until(loop, lambda: len(acceptor.messages) == len(sent) and not c._wbuf)
    assert acceptor.messages == sent
    assert c.write_backlog == 0


def test_a_blocking_channel_polls_for_what_came_after_its_last_receive():
    """recv_ready asks poll(0) before its non-blocking receive: nothing there gives nothing
    (no exception, no wait); a frame that arrived since the last receive is read (the
    processor sees a cancel for a task it holds before starting that task)."""
    from scaler.io.connection import BlockingChannel
    ours, theirs = socket.socketpair()
    theirs.settimeout(TIMEOUT)
    channel = BlockingChannel(theirs)
    ours.sendall(encode(m.Heartbeat(1.0)))
    assert channel.recv() == m.Heartbeat(1.0)
    assert channel.recv_ready() == []
    ours.sendall(encode(m.TaskCancel(b"t")))
    deadline = time.monotonic() + TIMEOUT
    got = []
    while not got and time.monotonic() < deadline:  # (the bytes may take a moment to be readable)
        got = channel.recv_ready()
    assert got == [m.TaskCancel(b"t")]
    assert channel.recv_ready(poll=False) == []
    ours.close()
    theirs.close()


def _voluntary_switches(native_id):
    with open("/proc/%d/task/%d/status" % (os.getpid(), native_id)) as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(__import__("threading"), "get_native_id"),
                    reason="counts context switches in /proc (Linux, Python 3.8+)")
def test_a_blocking_channel_waiting_to_receive_is_not_woken_by_its_peer_reading():
    """The processor's side: after sending a result it blocks for the next task. A reader
    blocked in a unix socket's recv() is woken each time the peer reads what it sent (the
    kernel's write-space wake-up is not filtered for it); one waiting in poll() is not.
    So one wake-up per task here, not two."""
    import threading

    from scaler.io.connection import BlockingChannel

    rounds = 60
    ours, theirs = socket.socketpair()
    channel = BlockingChannel(ours)
    ready = threading.Event()
    counted = threading.Event()
    native = []

    def processor():
        native.append(threading.get_native_id())
        ready.set()
        for i in range(rounds):
            channel.send(m.Heartbeat(float(i)))  # a "result"
            channel.recv()  # block for the next "task"
        channel.send(m.Heartbeat(-1.0))
        counted.wait(10)  # alive (its /proc entry with it) until counted

    thread = threading.Thread(target=processor, daemon=True)
    try:
        thread.start()
        assert ready.wait(10)
        before = _voluntary_switches(native[0])
        peer = BlockingChannel(theirs)
        for i in range(rounds):
            time.sleep(0.002)  # the processor is blocked in its receive by now
            peer.recv()  # reading its result: the read that used to wake it
            time.sleep(0.002)
            peer.send(m.Heartbeat(float(i)))  # the next "task": the one wake-up it needs
        peer.recv()  # the last "result": every task has been received
        time.sleep(0.01)
        woken = _voluntary_switches(native[0]) - before
        counted.set()
        thread.join(10)
        assert not thread.is_alive()
        assert woken < rounds * 1.5, "%d wake-ups for %d tasks" % (woken, rounds)
    finally:
        ours.close()
        theirs.close()
