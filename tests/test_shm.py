"""Shared memory for big payloads (scaler.io.shm), descriptor passing (scaler.io.fd_connection),
and the store's handling of shared objects — in one process, no cluster.

The end-to-end paths (shared memory and socket, with real processes) are in test_e2e_shm.py.
"""

import os
import socket
import sys
import threading
import time

import pytest

from scaler.io import shm
from scaler.io.fd_connection import FdChannel, FdConnection
from scaler.io.loop import EventLoop
from scaler.io.connection import Handler
from scaler.object_storage.store import ObjectStore
from scaler.protocol import messages as m
from scaler.utility.serialization import ChunkWriter, cloudpickle_dump, dump_chunks, dumps_result, payload_size

pytestmark = pytest.mark.skipif(not (sys.platform.startswith("linux") and hasattr(os, "memfd_create")),
                                reason="memfds are Linux-only")
TIMEOUT = 10.0
MIB = 1024 * 1024


def open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_leaked_descriptors():
    before = open_fds()
    yield
    for _ in range(50):  # a Segment dropped by a test is closed by the garbage collector
        import gc
        gc.collect()
        leaked = open_fds() - before
        if not leaked:
            break
        time.sleep(0.01)
    assert not leaked, [os.readlink("/proc/self/fd/" + fd) for fd in leaked if os.path.exists("/proc/self/fd/" + fd)]


# --- memfds ------------------------------------------------------------------------------------

def test_make_sealed_then_open_peer_reads_the_same_bytes():
    data = [b"head", os.urandom(MIB), memoryview(b"tail")]
    segment = shm.make_sealed(data)
    try:
        fd = shm.open_peer(os.getpid(), segment.fd, segment.token, segment.size, shm.SEALED)
        other = shm.Segment(fd, segment.size, segment.token)
        assert bytes(other.view()) == b"".join(bytes(d) for d in data)
        other.close()
    finally:
        segment.close()


def test_open_peer_refuses_a_wrong_token():
    segment = shm.make_sealed([b"x" * 100])
    try:
        with pytest.raises(shm.ShmError):
            shm.open_peer(os.getpid(), segment.fd, shm.new_token())
        with pytest.raises(shm.ShmError):
            shm.open_peer(os.getpid(), segment.fd, "../../etc/passwd")  # not a token at all
    finally:
        segment.close()


def test_open_peer_refuses_what_is_not_a_memfd():
    r, w = os.pipe()
    try:
        with pytest.raises(shm.ShmError):  # the number of a pipe (say, reused): refused, and never blocks
            shm.open_peer(os.getpid(), r, shm.new_token())
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(shm.ShmError):
        shm.open_peer(os.getpid(), 987654, shm.new_token())  # no such descriptor


def test_open_peer_refuses_an_unsealed_or_short_memfd():
    token = shm.new_token()
    fd = shm.create(token)
    try:
        shm.write_all(fd, [b"y" * 4096])
        with pytest.raises(shm.ShmError):  # may still shrink under a mapping (SIGBUS): refused
            shm.open_peer(os.getpid(), fd, token)
        shm.seal(fd)
        with pytest.raises(shm.ShmError):
            shm.open_peer(os.getpid(), fd, token, min_size=4097)
        os.close(shm.open_peer(os.getpid(), fd, token, min_size=4096))
    finally:
        os.close(fd)


def test_a_sealed_memfd_cannot_be_changed():
    segment = shm.make_sealed([b"z" * 10])
    try:
        with pytest.raises(OSError):
            os.write(segment.fd, b"more")
        with pytest.raises(OSError):
            os.ftruncate(segment.fd, 0)
    finally:
        segment.close()


def test_probe_nonce_is_read_back():
    probe = shm.Probe()
    try:
        assert shm.read_probe(os.getpid(), probe.fd, probe.token) == probe.nonce
    finally:
        probe.close()
    with pytest.raises(shm.ShmError):
        shm.read_probe(os.getpid(), probe.segment.fd if probe.segment.fd >= 0 else 0, probe.token)


def test_shared_memory_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(shm.ENV, "0")
    assert not shm.available()
    monkeypatch.setenv(shm.ENV, "1")
    assert shm.available()


def test_segment_view_outlives_its_descriptor():
    segment = shm.make_sealed([b"abc" * 1000])
    view = segment.detach()
    assert segment.fd == -1
    assert bytes(view[:6]) == b"abcabc"


# --- reading a payload out of a memfd without mapping it ---------------------------------------

def _shared(chunks, head=b""):
    """A SharedPayload over ``chunks``, placed after ``head`` in its memfd (as the storage places
    an object after other bytes)."""
    segment = shm.make_sealed([head] + list(chunks))
    return shm.SharedPayload(segment, len(head), segment.size - len(head))


def test_shared_payload_unpickles_its_range_only():
    value = {"big": os.urandom(3 * MIB), "array": bytearray(os.urandom(2 * MIB)), "small": [1, "two", 3.0]}
    writer = ChunkWriter()
    import pickle
    pickle.dump(value, writer, protocol=5)
    payload = _shared(writer.chunks, head=b"not part of it" * 100)
    assert len(payload) == writer.size
    assert pickle.load(payload.reader()) == value
    assert pickle.load(payload.reader()) == value  # each reader reads from the start
    del payload


def test_shared_payload_read_all_and_partial_reads():
    data = os.urandom(MIB + 17)
    payload = _shared([data], head=b"x" * 5)
    assert payload.read_all() == data
    reader = payload.reader()
    assert reader.read(3) == data[:3]
    buffer = bytearray(10)
    assert reader.readinto(buffer) == 10 and bytes(buffer) == data[3:13]
    assert reader.read() == data[13:]
    assert reader.read() == b"" and reader.readinto(bytearray(4)) == 0  # never past its end
    del payload, reader


def test_shared_payload_readline_for_text_pickles():
    import pickle
    payload = _shared([pickle.dumps({"a": [1, 2]}, protocol=0)], head=b"\n\n")
    assert pickle.load(payload.reader()) == {"a": [1, 2]}
    del payload


def test_shared_payload_is_read_by_threads_at_once():
    import pickle
    value = [os.urandom(MIB) for _ in range(4)]
    writer = ChunkWriter()
    pickle.dump(value, writer, protocol=5)
    payload = _shared(writer.chunks)
    results = []
    threads = [threading.Thread(target=lambda p=payload: results.append(pickle.load(p.reader()))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert results == [value] * 4
    del payload


def test_shared_payloads_are_counted_and_close_their_descriptor():
    base = shm.SharedPayload.held
    held = [_shared([b"y" * 100]) for _ in range(3)]
    assert shm.SharedPayload.held == base + 3
    fds = [p.segment.fd for p in held]
    del held
    assert shm.SharedPayload.held == base
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_closed_shared_payload_raises_instead_of_reading_another_descriptor():
    payload = _shared([b"w" * 100])
    payload.segment.close()
    with pytest.raises(shm.ShmError):
        payload.reader()
    del payload


def test_reads_past_the_kernels_2_gib_cap_come_whole(monkeypatch):
    """One pread returns at most about 2 GiB: ``read`` gets the rest with further reads (the
    cap simulated at a third of the payload)."""
    data = os.urandom(3 * MIB + 5)
    payload = _shared([data], head=b"h")
    real_pread, real_preadv = os.pread, os.preadv
    cap = MIB
    monkeypatch.setattr(os, "pread", lambda fd, n, offset: real_pread(fd, min(n, cap), offset))
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, offset: real_preadv(
        fd, [memoryview(buffers[0])[:cap]], offset))
    assert payload.read_all() == data
    import pickle
    writer = ChunkWriter()
    pickle.dump({"a": data, "b": bytearray(data)}, writer, protocol=5)
    other = _shared(writer.chunks)
    assert pickle.load(other.reader()) == {"a": data, "b": bytearray(data)}
    monkeypatch.undo()
    del payload, other


def test_a_reader_never_reads_a_reused_descriptor_number():
    payload = _shared([b"v" * 100])
    reader = payload.reader()
    fd = payload.segment.fd
    payload.segment.close()
    other = os.open("/dev/zero", os.O_RDONLY)
    try:
        assert other == fd  # the number is reused at once
        with pytest.raises(shm.ShmError):
            reader.read(10)
        with pytest.raises(shm.ShmError):
            reader.readinto(bytearray(10))
    finally:
        os.close(other)
    del payload, reader


def test_the_descriptor_budget_is_a_quarter_of_the_limit_within_bounds(monkeypatch):
    import resource
    for soft, expected in ((1024, 256), (64, 32), (1 << 20, 1024), (resource.RLIM_INFINITY, 1024)):
        monkeypatch.setattr(resource, "getrlimit", lambda which, soft=soft: (soft, resource.RLIM_INFINITY))
        assert shm._descriptor_budget() == expected


def test_shared_payloads_cannot_be_copied():
    import copy
    payload = _shared([b"c" * 10])
    with pytest.raises(TypeError):
        copy.copy(payload)
    del payload


def test_bytes_serializer_hands_a_shared_payload_over_as_bytes():
    from scaler.utility.serialization import BytesSerializer

    class Upper:
        @staticmethod
        def deserialize(payload):
            assert type(payload) is bytes
            return payload.upper()
    payload = _shared([b"abc" * 1000])
    assert BytesSerializer(Upper()).deserialize(payload) == b"ABC" * 1000
    del payload


def test_memfds_leave_nothing_in_dev_shm():
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    segment = shm.make_sealed([b"q" * MIB])
    probe = shm.Probe()
    now = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    assert not [name for name in now - before if "scaler" in name]
    segment.close()
    probe.close()


# --- pickling without copying big buffers ----------------------------------------------------

def test_chunk_writer_keeps_big_buffers_by_reference():
    big = os.urandom(MIB)
    chunks = dump_chunks({"a": big, "b": 1}, cloudpickle_dump)
    assert isinstance(chunks, list) and any(chunk is big for chunk in chunks)
    import pickle
    assert pickle.loads(b"".join(chunks)) == {"a": big, "b": 1}
    assert payload_size(chunks) == len(b"".join(chunks))


def test_chunk_writer_sends_bytearrays_as_views():
    big = bytearray(os.urandom(MIB))
    chunks = dump_chunks(big, cloudpickle_dump)
    assert any(isinstance(chunk, memoryview) and chunk.obj is big for chunk in chunks)
    import pickle
    assert pickle.loads(b"".join(bytes(c) for c in chunks)) == big


def test_small_pickles_are_one_bytes_object():
    assert type(dumps_result([1, 2, 3])) is bytes
    writer = ChunkWriter()
    assert writer.write(b"") == 0 and writer.chunks == []


# --- descriptors over the agent/processor socketpair -------------------------------------------

class Recorder(Handler):
    def __init__(self):
        self.messages = []
        self.fds = []
        self.closed = None

    def message_received(self, conn, msg):
        self.messages.append(msg)
        if type(msg) is m.ProcessorStore:
            self.fds.append(conn.take_fd())

    def connection_closed(self, conn, reason):
        self.closed = reason


def run_until(loop, condition):
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        loop.call_later(0.01, loop.stop)
        loop.run()


def test_descriptors_travel_with_their_frames_both_ways():
    loop = EventLoop()
    a, b = socket.socketpair()
    a.setblocking(False)
    recorder = Recorder()
    conn = FdConnection(loop, a, recorder, peer="processor", handshake=False)
    channel = FdChannel(b)
    try:
        # agent -> processor: frames with and without descriptors, a big one in between
        segments = [shm.make_sealed([bytes([i]) * 1000]) for i in range(3)]
        conn.send(m.ProcessorCancel(b"t0"))
        for i, segment in enumerate(segments):
            assert conn.send_with_fd(m.ProcessorObjectShm(b"o%d" % i, 0, 1000), os.dup(segment.fd))
            conn.send(m.ProcessorObject(b"big%d" % i, os.urandom(2 * MIB)))
        got = []

        def read():
            while len(got) < 7:
                msg = channel.recv()
                if type(msg) is m.ProcessorObjectShm:
                    fd = channel.take_fd()
                    got.append(bytes(shm.Segment(fd, 1000, "").detach()[:1]))
                else:
                    got.append(type(msg).__name__)

        reader = threading.Thread(target=read)
        reader.start()
        run_until(loop, lambda: not reader.is_alive())
        assert got == ["ProcessorCancel", b"\x00", "ProcessorObject", b"\x01", "ProcessorObject", b"\x02",
                       "ProcessorObject"]
        assert not channel.received_fds
        # processor -> agent
        for i in range(3):
            channel.send_with_fd(m.ProcessorStore(b"r%d" % i, b"owner", segments[i].token, b""), segments[i].fd)
        run_until(loop, lambda: len(recorder.messages) == 3)
        for i, fd in enumerate(recorder.fds):
            assert fd is not None
            assert os.pread(fd, 1, 0) == bytes([i])
            os.close(fd)
        for segment in segments:
            segment.close()
    finally:
        conn.close()
        channel.sock.close()
        loop.close()


def test_a_closed_connection_closes_the_descriptors_it_held():
    loop = EventLoop()
    a, b = socket.socketpair()
    a.setblocking(False)
    conn = FdConnection(loop, a, Recorder(), peer="processor", handshake=False)
    segment = shm.make_sealed([b"x"])
    try:
        assert conn.send_with_fd(m.ProcessorObjectShm(b"o", 0, 1), os.dup(segment.fd))
        conn.close()  # before any flush: the queued descriptor is closed, not leaked
        assert not conn.send_with_fd(m.ProcessorObjectShm(b"o", 0, 1), segment.fd)  # refused: still ours
    finally:
        segment.close()
        b.close()
        loop.close()


def test_channel_reads_descriptors_across_partial_reads():
    """A big frame after a descriptor-carrying one, read in pieces by a slow reader."""
    a, b = socket.socketpair()
    sender, receiver = FdChannel(a), FdChannel(b)
    segment = shm.make_sealed([b"s" * 10])
    payload = os.urandom(3 * MIB)
    try:
        thread = threading.Thread(target=lambda: (
            sender.send_with_fd(m.ProcessorObjectShm(b"o", 0, 10), segment.fd),
            sender.send(m.ProcessorObject(b"p", payload))))
        thread.start()
        first = receiver.recv()
        second = receiver.recv()
        thread.join(TIMEOUT)
        assert type(first) is m.ProcessorObjectShm and bytes(second.payload) == payload
        fd = receiver.take_fd()
        assert os.pread(fd, 10, 0) == b"s" * 10
        os.close(fd)
    finally:
        segment.close()
        a.close()
        b.close()


# --- the store ---------------------------------------------------------------------------------

def test_store_closes_shared_objects_when_deleted_and_counts_them_against_the_limit():
    store = ObjectStore(max_bytes=3 * MIB)
    owner = b"client"
    ids = [bytes([i]) * 32 for i in range(4)]
    segments = [shm.make_sealed([b"a" * MIB]) for _ in range(4)]
    assert store.put(ids[0], owner, segments[0]) is None
    assert store.put(ids[1], owner, segments[1]) is None
    assert store.put(ids[2], b"other", b"b" * MIB) is None
    assert store.total_bytes == 3 * MIB and store.segments == 2
    assert "full" in store.put(ids[3], owner, segments[3])  # refused: the caller still owns it
    assert segments[3].fd >= 0
    segments[3].close()
    assert store.put(ids[0], owner, segments[2]) is None  # replaced: the old one is closed
    assert segments[0].fd == -1 and store.segments == 2
    store.delete([ids[1]])
    assert segments[1].fd == -1 and store.segments == 1 and store.total_bytes == 2 * MIB
    store.delete_owner(owner)
    assert segments[2].fd == -1 and store.segments == 0 and store.total_bytes == MIB
    store.clear()
    assert len(store) == 0 and store.total_bytes == 0
