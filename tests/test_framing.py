"""The sans-I/O frame reader (scaler.protocol.framing), fed by hand: no sockets."""

import mmap
import struct
import sys

import pytest

from scaler.protocol import messages as m
from scaler.protocol.codec import FRAME_HEADER, ProtocolError, decode, encode
from scaler.protocol.framing import BIG_FRAME, FrameReader
from scaler.protocol.handshake import HANDSHAKE_FRAME_LIMIT

LIMIT = 4 * 1024 ** 3
SMALL = [m.Heartbeat(1.5), m.Rejected("\u00e9" * 50), m.ObjectPut(b"id", b"", b"p" * 300), m.Accepted(),
         m.ObjectDelete([b"a", b"", b"c"])]


def drain(reader):
    out = []
    while True:
        msg = reader.next_message()
        if msg is None:
            return out
        out.append(msg)


def rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pytest.skip("no /proc/self/status")


def pattern(n):
    return (bytes(range(251)) * (n // 251 + 1))[:n]


def test_whole_frames_in_one_feed():
    reader = FrameReader(LIMIT)
    reader.feed(b"".join(encode(x) for x in SMALL))
    assert drain(reader) == SMALL
    assert reader.next_frame() is None


def test_byte_by_byte():
    data = b"".join(encode(x) for x in SMALL)
    reader = FrameReader(LIMIT)
    got = []
    for i in range(len(data)):
        reader.feed(data[i:i + 1])
        got += drain(reader)
    assert got == SMALL


@pytest.mark.parametrize("cut", range(1, FRAME_HEADER.size + 2))
def test_split_header(cut):
    frame = encode(m.Heartbeat(3.0))
    reader = FrameReader(LIMIT)
    reader.feed(frame[:cut])
    assert reader.next_frame() is None
    reader.feed(frame[cut:])
    assert drain(reader) == [m.Heartbeat(3.0)]


def test_frame_payload_is_the_frame_without_its_header():
    frame = encode(m.Rejected("x"))
    reader = FrameReader(LIMIT)
    reader.feed(frame + frame[:3])
    assert bytes(reader.next_frame()) == frame[FRAME_HEADER.size:]
    assert reader.next_frame() is None


@pytest.mark.parametrize("feed_whole", [True, False])
def test_limit_is_checked_from_the_header_alone(feed_whole):
    reader = FrameReader(1000)
    header = FRAME_HEADER.pack(1001)
    reader.feed(header + b"x" * (1001 if feed_whole else 0))
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        reader.next_frame()


def test_frame_at_the_limit_passes():
    msg = m.Rejected("r" * 100)
    frame = encode(msg)
    reader = FrameReader(len(frame) - FRAME_HEADER.size)
    reader.feed(frame)
    assert reader.next_message() == msg


def test_empty_frame_is_an_error():
    reader = FrameReader(LIMIT)
    reader.feed(FRAME_HEADER.pack(0))
    with pytest.raises(ProtocolError, match="empty"):
        reader.next_frame()


def test_malformed_payload_is_an_error():
    reader = FrameReader(LIMIT)
    reader.feed(FRAME_HEADER.pack(3) + b"\xfe\x00\x00")
    with pytest.raises(ProtocolError):
        reader.next_message()


def test_limit_change_applies_to_the_next_frame():
    """As a connection does: the handshake's cap, then the configured one, on one stream."""
    accepted, big = m.Accepted(), m.ObjectPut(b"o", b"", b"b" * 5000)
    data = encode(accepted) + encode(big)
    capped = FrameReader(HANDSHAKE_FRAME_LIMIT)
    capped.feed(data)
    assert capped.next_message() == accepted
    with pytest.raises(ProtocolError):
        capped.next_message()
    raised = FrameReader(HANDSHAKE_FRAME_LIMIT)
    raised.feed(data)
    assert raised.next_message() == accepted
    raised.limit = LIMIT
    assert raised.next_message() == big


def test_big_frame_goes_to_a_buffer_of_its_own():
    payload = pattern(3 * BIG_FRAME + 7)
    frame = encode(m.ObjectPut(b"id", b"owner", payload))
    after = encode(m.Heartbeat(9.0))
    reader = FrameReader(LIMIT)
    reader.feed(frame[:1000])
    assert reader.next_frame() is None and reader.receiving_big
    total = len(frame) - FRAME_HEADER.size
    view = reader.big_buffer()
    assert len(view) == total - (1000 - FRAME_HEADER.size)
    # what recv_into does, in a few pieces
    rest = memoryview(frame)[1000:]
    done = 0
    while done < len(rest):
        view = reader.big_buffer()
        n = min(len(view), 1 << 20)
        view[:n] = rest[done:done + n]
        view.release()
        reader.big_received(n)
        done += n
        if done < len(rest):
            assert reader.next_frame() is None
    reader.feed(after)  # big frames may be complete before they are taken out
    frame_out = reader.next_frame()
    assert isinstance(frame_out, mmap.mmap) and len(frame_out) == total
    assert not reader.receiving_big and reader.big_buffer() is None
    got = decode(frame_out)
    assert got.object_id == b"id" and got.owner_id == b"owner" and bytes(got.payload) == payload
    assert drain(reader) == [m.Heartbeat(9.0)]


def test_feed_fills_a_pending_big_frame_then_the_receive_buffer():
    payload = pattern(BIG_FRAME)
    data = encode(m.ProcessorObject(b"o", payload)) + encode(m.Heartbeat(1.0)) + encode(m.Accepted())
    reader = FrameReader(LIMIT)
    got = []
    for start in range(0, len(data), 100_003):  # cuts headers and payloads at odd places
        reader.feed(data[start:start + 100_003])
        got += drain(reader)
    assert [type(x) for x in got] == [m.ProcessorObject, m.Heartbeat, m.Accepted]
    assert bytes(got[0].payload) == payload


def test_just_under_big_frame_stays_in_the_receive_buffer():
    msg = m.ProcessorObject(b"o", b"s" * (BIG_FRAME - 100))
    frame = encode(msg)
    assert len(frame) - FRAME_HEADER.size < BIG_FRAME
    reader = FrameReader(LIMIT)
    reader.feed(frame[:-1])
    assert reader.next_frame() is None and not reader.receiving_big
    reader.feed(frame[-1:])
    assert isinstance(reader.next_frame(), bytearray)


def test_complete_big_frame_in_the_buffer_is_taken_as_is():
    payload = pattern(2 * BIG_FRAME)
    reader = FrameReader(LIMIT)
    reader.feed(encode(m.ProcessorObject(b"o", payload)))
    assert not reader.receiving_big
    assert bytes(reader.next_message().payload) == payload


@pytest.mark.skipif(sys.maxsize < 2 ** 33, reason="needs a 64-bit address space")
def test_announced_4_gib_commits_no_memory():
    """Regression: a frame header used to make the reader zero-fill the announced size."""
    reader = FrameReader(LIMIT)
    before = rss_bytes()
    reader.feed(FRAME_HEADER.pack(LIMIT) + b"abc")
    assert reader.next_frame() is None and reader.receiving_big
    assert len(reader.big_buffer()) == LIMIT - 3
    assert rss_bytes() - before < 16 * 1024 * 1024
    reader.clear()
    assert not reader.receiving_big and reader.next_frame() is None


def test_clear_drops_a_partial_frame():
    reader = FrameReader(LIMIT)
    reader.feed(encode(m.Heartbeat(1.0))[:5])
    reader.clear()
    reader.feed(encode(m.Heartbeat(2.0)))
    assert drain(reader) == [m.Heartbeat(2.0)]


def test_header_is_little_endian_u64():
    assert FRAME_HEADER.size == 8 and FRAME_HEADER.format in ("<Q", b"<Q")
    reader = FrameReader(LIMIT)
    reader.feed(struct.pack("<Q", 1) + bytes((m.Accepted.TYPE,)))
    assert reader.next_message() == m.Accepted()
