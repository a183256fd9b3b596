"""Batch frames: several small messages of one type in one frame (codec.encode_batch), made
by Connection when such messages are sent in a row and read back one by one.

The codec is driven directly (round trips against the single-message codec, every kind of
malformed batch); Connection and BlockingChannel over a socketpair, as in test_connection.
"""

import random
import socket
import struct

import pytest

from scaler.io import connection as connection_module
from scaler.io.connection import BlockingChannel, Connection
from scaler.io.fd_connection import FdConnection
from scaler.protocol import codec
from scaler.protocol import messages as m
from scaler.protocol.codec import (BATCH_ITEM_LIMIT, BATCH_MAX_MESSAGES, BATCH_TYPE, FRAME_HEADER, ProtocolError, batch_size, decode,
                                   decode_batch, encode, encode_batch, encode_frames, is_batch)
from scaler.protocol.framing import FrameReader
from test_connection import Recorder, loop, nonblocking_pair, open_pair, run_until  # noqa: F401 - the fixture
from test_framing import drain

assert loop  # pytest finds the fixture by its name


def results(n, detail=lambda i: ""):
    return [m.TaskResult(b"t%07d" % i, i % 9, b"\x80\x05K%c." % (i % 256), detail(i)) for i in range(n)]


def worker_tasks(n):
    return [m.WorkerTask(b"t%07d" % i, b"client%02d" % (i % 3), i % 256, b"f" * 32, bytes(range(i % 200)),
                         (-1) ** i * i * 1_000_003) for i in range(n)]


def submits(n):
    return [m.TaskSubmit(b"t%07d" % i, i % 16, b"f" * (i % 40), b"c" * (i % 300), ["", "gpu", "linux,gpu=2"][i % 3],
                         2 ** 63 - 1 - i) for i in range(n)]


def payload(msgs):
    return encode_batch(msgs)[0][FRAME_HEADER.size:]


# --- the codec ----------------------------------------------------------------------------------

@pytest.mark.parametrize("msgs", [
    results(2), results(500, lambda i: "profile:%d,0,%d" % (i, i)), results(3, lambda i: "é ☃ %d" % i),
    worker_tasks(2), worker_tasks(300), submits(2), submits(257),
    [m.TaskResult(b"a", 0, b"x" * BATCH_ITEM_LIMIT, "d" * BATCH_ITEM_LIMIT), m.TaskResult(b"", 0, b"", "")],
], ids=["results-2", "results-profiled", "results-unicode", "worker-tasks-2", "worker-tasks-300", "submits-2",
        "submits-257", "at-the-item-limit"])
def test_a_batch_reads_back_as_the_messages_it_was_made_of(msgs):
    frame = encode_batch(msgs)
    assert len(frame) == 1
    (length,) = FRAME_HEADER.unpack_from(frame[0])
    assert length == len(frame[0]) - FRAME_HEADER.size
    body = frame[0][FRAME_HEADER.size:]
    assert is_batch(body)
    decoded = decode_batch(body)
    assert decoded == msgs
    # field by field as the single-message codec reads them, types included
    for got, msg in zip(decoded, msgs):
        single = decode(encode(msg)[FRAME_HEADER.size:])
        for name, _ in type(msg).FIELDS:
            assert getattr(got, name) == getattr(single, name)
            assert type(getattr(got, name)) is type(getattr(single, name))


def test_batch_size_says_which_messages_may_join_a_batch():
    assert batch_size(m.Heartbeat(1.0)) == 0  # not a batchable type
    assert batch_size(m.TaskCancel(b"t")) == 0
    assert batch_size(m.TaskResult(b"t", 0, b"ab", "cd")) == 1 + 1 + 2 + 2
    assert batch_size(m.TaskResult(b"t", 0, b"x" * (BATCH_ITEM_LIMIT + 1), "")) == 0  # too long
    assert batch_size(m.TaskResult(b"t", 0, [b"ab", b"cd"], "")) == 0  # chunks: sent as they are
    assert batch_size(m.TaskResult(b"t", 0, memoryview(b"ab"), "")) == 0  # only bytes
    assert batch_size(m.TaskSubmit(b"t", 0, b"f", b"c", "x" * (BATCH_ITEM_LIMIT + 1), 0)) == 0


def test_encode_frames_keeps_the_order_and_batches_runs_of_one_type():
    msgs = (results(3) + [m.Heartbeat(1.0)] + submits(1) + results(1) + worker_tasks(4)
            + [m.TaskResult(b"big", 0, b"x" * (BATCH_ITEM_LIMIT + 1), "")] + results(2))
    frames = encode_frames(msgs)
    stream = b"".join(bytes(f) for f in frames)
    reader = codec_reader(stream)
    assert reader == msgs
    kinds = [("batch" if is_batch(bytes(f)[8:]) else type(decode(bytes(f)[8:])).__name__) for f in frames]
    assert kinds == ["batch", "Heartbeat", "TaskSubmit", "TaskResult", "batch", "TaskResult", "batch"]


def test_encode_frames_cuts_a_long_run_at_the_batch_cap():
    msgs = results(2 * BATCH_MAX_MESSAGES + 5)
    frames = encode_frames(msgs)
    assert len(frames) == 3 and codec_reader(b"".join(bytes(f) for f in frames)) == msgs
    assert len(decode_batch(bytes(frames[0])[8:])) == BATCH_MAX_MESSAGES


def codec_reader(stream):
    reader = FrameReader(1 << 30)
    reader.feed(stream)
    return drain(reader)


def test_a_batch_needs_two_messages_of_a_batchable_type():
    with pytest.raises(ValueError):
        encode_batch(results(1))
    with pytest.raises(ValueError):
        encode_batch(results(BATCH_MAX_MESSAGES + 1))
    with pytest.raises(ValueError):
        encode_batch([m.Heartbeat(1.0), m.Heartbeat(2.0)])
    with pytest.raises(ValueError):
        codec.declare(199, "Listy", [("items", "bytes_list")], batchable=True)
    assert 199 not in codec._SPECS


def test_decode_refuses_a_batch_frame_and_declare_refuses_its_type_id():
    with pytest.raises(ProtocolError, match="unknown message type %d" % BATCH_TYPE):
        decode(payload(results(2)))
    with pytest.raises(ValueError):
        codec.declare(BATCH_TYPE, "Clash", [("x", "u8")])


def _with(body, offset, fmt, value):
    data = bytearray(body)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def payload_of_count(count):
    """A well-formed batch of ``count`` empty TaskResults, past what encode_batch makes."""
    return b"".join([codec._BATCH_HEAD.pack(BATCH_TYPE, m.TaskResult.TYPE, count), bytes(count),
                     bytes(8 * 3 * count)])


GOOD = payload(results(3, lambda i: "d%d" % i))  # 6 head, 3 u8 statuses, 6 * 3 lengths, then the bytes


@pytest.mark.parametrize("body, words", [
    (b"", "not a batch"),
    (bytes([BATCH_TYPE]), "not a batch"),
    (encode(m.Heartbeat(1.0))[8:], "not a batch"),
    (_with(GOOD, 1, "<B", m.Heartbeat.TYPE), "not batchable"),
    (_with(GOOD, 1, "<B", 250), "not batchable"),
    (_with(GOOD, 2, "<I", 0), "announces 0 messages"),
    (_with(GOOD, 2, "<I", 1), "announces 1 messages"),
    (_with(GOOD, 2, "<I", 2 ** 32 - 1), "announces 4294967295 messages"),  # refused before any allocation
    (payload_of_count(BATCH_MAX_MESSAGES + 1), "announces %d messages" % (BATCH_MAX_MESSAGES + 1)),
    (_with(GOOD, 2, "<I", 4), "do not add up"),
    (_with(GOOD, 6 + 3, "<Q", 2 ** 64 - 1), "do not add up"),  # a length past the frame
    (GOOD[:-1], "do not add up"),
    (GOOD + b"\x00", "do not add up"),
])
def test_a_malformed_batch_is_a_protocol_error(body, words):
    with pytest.raises(ProtocolError) as info:
        decode_batch(body)
    assert words in str(info.value)


def test_a_batch_with_a_field_that_is_not_utf8_is_a_protocol_error():
    body = bytearray(payload([m.TaskResult(b"a", 0, b"", "xy"), m.TaskResult(b"b", 0, b"", "")]))
    body[-2:] = b"\xff\xfe"  # the first detail, the last bytes of the frame
    with pytest.raises(ProtocolError, match="not UTF-8"):
        decode_batch(bytes(body))


def test_every_truncation_and_byte_flip_of_a_batch_is_refused_or_read_never_crashes():
    body = payload(worker_tasks(5))
    rng = random.Random(7)
    for cut in range(len(body)):
        with pytest.raises(ProtocolError):
            decode_batch(body[:cut])
    for _ in range(3000):
        data = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            msgs = decode_batch(bytes(data))
        except ProtocolError:
            continue
        assert all(type(x) is m.WorkerTask for x in msgs)


# --- connections --------------------------------------------------------------------------------

def test_a_run_of_small_messages_goes_as_one_batch_frame_in_order(loop, monkeypatch):
    a, acceptor, c, connector = open_pair(loop)
    frames = []
    real = connection_module.encode_batch
    monkeypatch.setattr(connection_module, "encode_batch", lambda msgs: frames.append(len(msgs)) or real(msgs))
    msgs = results(100) + [m.Heartbeat(5.0)] + results(2) + submits(3) + [m.TaskResult(b"x", 0, b"y" * 70000, "")]
    for msg in msgs:
        a.send(msg)
    run_until(loop, lambda: len(connector.messages) == len(msgs))
    assert connector.messages == msgs
    assert frames == [100, 2, 3]


def test_a_batch_is_cut_at_its_caps(loop, monkeypatch):
    monkeypatch.setattr(connection_module, "BATCH_MESSAGES", 64)
    a, acceptor, c, connector = open_pair(loop)
    sizes = []
    real = connection_module.encode_batch
    monkeypatch.setattr(connection_module, "encode_batch", lambda msgs: sizes.append(len(msgs)) or real(msgs))
    msgs = results(200)
    for msg in msgs:
        a.send(msg)
    a.send(m.Heartbeat(1.0))  # ends the run
    big = [m.TaskResult(b"%d" % i, 0, b"z" * BATCH_ITEM_LIMIT, "") for i in range(40)]  # 640 KiB
    for msg in big:
        a.send(msg)
    run_until(loop, lambda: len(connector.messages) == len(msgs) + 1 + len(big))
    assert connector.messages == msgs + [m.Heartbeat(1.0)] + big
    assert sizes[:4] == [64, 64, 64, 8]
    assert sum(sizes[4:]) == 40 and max(sizes[4:]) * BATCH_ITEM_LIMIT <= connection_module.BATCH_BYTES + BATCH_ITEM_LIMIT


def test_a_flush_that_encodes_the_batch_does_not_ask_for_another_flush(loop, monkeypatch):
    """The flush writes the batch it has just encoded: asking the loop for one more flush
    cost every wake-up of a loop that sends results or tasks an extra iteration and an
    epoll_wait(0) that found nothing."""
    a, acceptor, c, connector = open_pair(loop)
    msgs = results(3)
    for msg in msgs:
        a.send(msg)  # held, unencoded, until a flush
    asked = []
    real = loop.want_flush
    monkeypatch.setattr(loop, "want_flush", lambda conn: asked.append(conn) or real(conn))
    a.flush()
    assert asked == []
    run_until(loop, lambda: len(connector.messages) == len(msgs))
    assert connector.messages == msgs


def test_a_batch_that_crosses_the_backlog_limit_drops_the_peer_as_one_that_stopped_reading(loop, monkeypatch):
    """The batch is encoded when the loop flushes; if that is what takes the peer's backlog
    over its limit, the close must still say why (it said "closed")."""
    a, acceptor, c, connector = open_pair(loop)
    monkeypatch.setattr(connection_module, "WRITE_HIGH_WATER", 1000)
    a.max_write_backlog = 1000
    for msg in results(100):  # ~3 KiB, held unencoded until the flush
        a.send(msg)
    run_until(loop, lambda: a.closed)
    assert acceptor.closed.startswith("stopped reading"), acceptor.closed


def test_a_batch_before_the_handshake_closes_the_connection(loop):
    a_sock, raw = nonblocking_pair()
    acceptor = Recorder()
    a = Connection(loop, a_sock, acceptor, peer="raw", allowed_roles=(m.ROLE_CLIENT,))
    raw.setblocking(True)
    raw.sendall(encode_batch(results(2))[0])
    run_until(loop, lambda: a.closed)
    assert "protocol error" in acceptor.closed and "batch" in acceptor.closed
    assert acceptor.messages == []
    raw.close()


def test_a_malformed_batch_after_the_handshake_closes_the_connection(loop):
    a, acceptor, c, connector = open_pair(loop)
    c.send(m.Heartbeat(1.0))
    run_until(loop, lambda: acceptor.messages)
    body = _with(payload(results(2)), 2, "<I", 3)
    c.sock.sendall(FRAME_HEADER.pack(len(body)) + body)
    run_until(loop, lambda: a.closed)
    assert acceptor.closed.startswith("protocol error from connector")
    assert acceptor.messages == [m.Heartbeat(1.0)]


def test_a_handler_that_closes_mid_batch_gets_no_more_of_it(loop):
    a, acceptor, c, connector = open_pair(loop)

    class CloseAtThird(Recorder):
        def message_received(self, conn, msg):
            super().message_received(conn, msg)
            if len(self.messages) == 3:
                conn.close("enough")
    closer = CloseAtThird()
    c.handler = closer
    for msg in results(10):
        a.send(msg)
    run_until(loop, lambda: c.closed)
    assert closer.messages == results(3) and closer.closed == "enough"


def test_a_descriptor_carrying_connection_never_batches(loop):
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    conn = FdConnection(loop, ours, Recorder(), peer="processor", handshake=False)
    for msg in results(5):
        conn.send(msg)
    loop.flush_all()
    channel = BlockingChannel(theirs)
    theirs.settimeout(10)
    got = [channel.recv() for _ in range(5)]
    assert got == results(5)
    conn.close()
    theirs.close()


def test_a_blocking_channel_reads_a_batch_message_by_message():
    ours, theirs = socket.socketpair()
    theirs.settimeout(10)
    channel = BlockingChannel(theirs)
    msgs = results(7)
    ours.sendall(encode_batch(msgs)[0] + encode(m.Heartbeat(2.0)))
    assert channel.recv() == msgs[0]
    assert channel.recv_ready() == msgs[1:] + [m.Heartbeat(2.0)]
    ours.close()
    theirs.close()


@pytest.mark.parametrize("bad", [m.TaskResult(b"bad", 300, b"", ""),  # status is a u8
                                 m.TaskResult(b"bad", 0, b"", "caf\udce9")],  # not UTF-8
                         ids=["out-of-range", "not-utf8"])
def test_a_batch_that_cannot_be_encoded_closes_the_connection_and_says_why(loop, bad):
    """Messages of a batch are encoded when the loop flushes, not when sent, so a field out of
    its range (a bug: inputs are checked before they become messages) cannot raise to the
    sender. It must not vanish either, nor escape the loop (that ended the whole process):
    what was sent before it is written, then the connection closes naming the error."""
    a, acceptor, c, connector = open_pair(loop)
    a.send(m.Heartbeat(1.0))
    good = results(2)
    for msg in good + [bad]:
        a.send(msg)
    a.send(m.Heartbeat(2.0))  # after the failure: dropped with the connection
    run_until(loop, lambda: a.closed)
    assert "cannot encode" in acceptor.closed and "TaskResult" in acceptor.closed, acceptor.closed
    run_until(loop, lambda: connector.closed)
    assert connector.messages == [m.Heartbeat(1.0)] + good
