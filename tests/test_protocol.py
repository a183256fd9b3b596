"""Pure unit tests for the wire codec (scaler.protocol.codec / messages) and BlockingChannel.

No network and no subprocesses: the channel tests use ``socket.socketpair()`` and, for
payloads larger than the socket buffers, a sender thread. Everything random is seeded.
"""

import math
import random
import socket
import struct
import threading
import time
import tracemalloc

import pytest

from scaler.io.connection import BlockingChannel
from scaler.protocol import codec
from scaler.protocol import messages as m
from scaler.protocol.codec import ProtocolError, decode, encode, encode_parts, frame_length

THRESHOLD = codec.ZERO_COPY_THRESHOLD
KINDS = ("u8", "u16", "u32", "u64", "i64", "f64", "bool", "bytes", "str", "bytes_list", "chunks")
GiB = 1024 ** 3


def _pattern(n, seed):
    """Deterministic pseudo-random bytes (fast: repeats a seeded 4 KiB block)."""
    block = random.Random(seed).getrandbits(4096 * 8).to_bytes(4096, "little")
    return (block * (n // 4096 + 1))[:n]


BIG = _pattern(THRESHOLD + 4567, 1)  # > 64 KiB: decoded as a zero-copy memoryview
BIG2 = _pattern(THRESHOLD * 2 + 1, 2)
UNICODE = "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\u8a9e \U0001F40D \u0000 \U0010FFFF \u00ff"
BIG_UNICODE = ("\u65e5\u672c \U0001F40D \u00e9 abc " * 6000)  # ~ 96 KiB of UTF-8

# One representative value per field kind for each variant.
VARIANTS = {
    "typical": {"u8": 7, "u16": 1234, "u32": 123456, "u64": 2 ** 40 + 3, "i64": -42, "f64": 3.25,
                "bool": True, "bytes": b"\x00abc\xff", "str": "hello", "bytes_list": [b"a", b"", b"\x00\xff"]},
    "empty": {"u8": 0, "u16": 0, "u32": 0, "u64": 0, "i64": 0, "f64": 0.0,
              "bool": False, "bytes": b"", "str": "", "bytes_list": []},
    "max": {"u8": 255, "u16": 65535, "u32": 2 ** 32 - 1, "u64": 2 ** 64 - 1, "i64": 2 ** 63 - 1,
            "f64": 1.7976931348623157e308, "bool": True, "bytes": bytes(range(256)) * 4, "str": "x" * 1000,
            "bytes_list": [b"x" * i for i in range(20)]},
    "min": {"u8": 0, "u16": 0, "u32": 0, "u64": 0, "i64": -2 ** 63, "f64": -5e-324,
            "bool": False, "bytes": b"\x00", "str": "\x00", "bytes_list": [b""]},
    "inf": {"u8": 1, "u16": 1, "u32": 1, "u64": 1, "i64": -1, "f64": float("-inf"),
            "bool": True, "bytes": b"\xc3\x28", "str": " ", "bytes_list": [b"", b""]},
    "unicode": {"u8": 200, "u16": 300, "u32": 70000, "u64": 2 ** 63, "i64": 2 ** 31, "f64": -1e-300,
                "bool": True, "bytes": UNICODE.encode("utf-8"), "str": UNICODE,
                "bytes_list": [UNICODE.encode("utf-8"), "\U0001F40D".encode("utf-8")]},
    "large": {"u8": 1, "u16": 2, "u32": 3, "u64": 4, "i64": 5, "f64": 6.5,
              "bool": False, "bytes": BIG, "str": BIG_UNICODE, "bytes_list": [BIG2, b"small", b"", BIG]},
    "threshold": {"u8": 1, "u16": 2, "u32": 3, "u64": 4, "i64": 5, "f64": 6.5, "bool": True,
                  "bytes": BIG[:THRESHOLD], "str": "a" * THRESHOLD,
                  "bytes_list": [BIG[:THRESHOLD - 1], BIG[:THRESHOLD], BIG[:THRESHOLD + 1]]},
}
for _values in VARIANTS.values():
    _values["chunks"] = _values["bytes"]  # the same on the wire; lists of chunks are tested below
SMALL_VARIANTS = ("typical", "empty", "max", "min", "inf", "unicode")
MESSAGES = codec.declared_messages()


def make(cls, variant):
    values = VARIANTS[variant]
    return cls(**{name: values[kind] for name, kind in cls.FIELDS})


def payload_of(msg):
    """encode() minus the 8-byte length prefix, after checking the prefix."""
    frame = encode(msg)
    (length,) = struct.unpack_from("<Q", frame, 0)
    assert length == len(frame) - 8
    return frame[8:]


def _norm(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def assert_same_fields(decoded, original):
    assert type(decoded) is type(original)
    for name, kind in original.FIELDS:
        got, want = getattr(decoded, name), getattr(original, name)
        if kind == "f64":
            assert isinstance(got, float)
            # bit-exact: keeps -0.0, NaN payload sign and subnormals
            assert struct.pack("<d", got) == struct.pack("<d", want), (name, got, want)
        elif kind == "bool":
            assert got is bool(want), (name, got)
        elif kind in ("u8", "u16", "u32", "u64", "i64"):
            assert type(got) is int and got == want, (name, got, want)
        elif kind == "str":
            assert type(got) is str and got == want, (name, got[:50], want[:50])
        elif kind in ("bytes", "chunks"):
            _check_bytes_value(got, want, name)
        else:
            assert isinstance(got, list) and len(got) == len(want), name
            for g, w in zip(got, want):
                _check_bytes_value(g, w, name)


def _check_bytes_value(got, want, name):
    # small values must be real bytes (ids are used as dict keys); big ones may be zero-copy views
    if len(want) < THRESHOLD:
        assert type(got) is bytes, (name, type(got))
    else:
        assert isinstance(got, (bytes, memoryview)), (name, type(got))
    assert bytes(got) == bytes(want), name


# --- declarations ---------------------------------------------------------------------------

def test_declared_messages_cover_the_messages_module():
    declared = codec.declared_messages()
    in_module = {v for v in vars(m).values() if isinstance(v, type) and issubclass(v, codec.Message)}
    assert len(declared) >= 30
    assert set(declared) == in_module
    types = [cls.TYPE for cls in declared]
    assert types == sorted(types) and len(set(types)) == len(types)
    assert all(0 < t < 256 for t in types)


def test_every_field_kind_is_known_to_these_tests():
    used = {kind for cls in MESSAGES for _, kind in cls.FIELDS}
    assert used <= set(KINDS), used - set(KINDS)
    for variant in VARIANTS.values():
        assert set(variant) == set(KINDS)


def test_handshake_message_type_ids_are_stable():
    # peers of different builds must agree on these before anything else is negotiated
    assert (m.Hello.TYPE, m.Welcome.TYPE, m.Proof.TYPE, m.Accepted.TYPE, m.Rejected.TYPE) == (1, 2, 3, 4, 5)
    assert m.MAGIC == 0x53434C52


def test_declare_rejects_bad_declarations_without_registering():
    before = codec.declared_messages()
    with pytest.raises(ValueError):
        codec.declare(m.Hello.TYPE, "Dup", [("x", "u8")])
    with pytest.raises(ValueError):
        codec.declare(0, "Zero", [("x", "u8")])
    with pytest.raises(ValueError):
        codec.declare(256, "TooBig", [("x", "u8")])
    with pytest.raises(ValueError):
        codec.declare(250, "BadKind", [("x", "u128")])
    assert codec.declared_messages() == before


def test_constructor_validates_fields():
    assert m.ObjectGet(b"id") == m.ObjectGet(object_id=b"id")
    with pytest.raises(TypeError):
        m.ObjectGet()
    with pytest.raises(TypeError):
        m.ObjectGet(b"a", b"b")
    with pytest.raises(TypeError):
        m.ObjectGet(b"a", object_id=b"b")
    with pytest.raises(TypeError):
        m.ObjectGet(nope=b"a")
    with pytest.raises(TypeError):
        codec.Message()
    msg = m.Accepted()
    with pytest.raises(AttributeError):
        msg.extra = 1  # __slots__


def test_equality_and_repr():
    a = m.ObjectPut(b"id", b"owner", BIG)
    b = decode(payload_of(a))
    assert a == b and not (a != b)
    assert a != m.ObjectPut(b"id", b"owner", BIG[:-1])
    assert m.ObjectGet(b"x") != m.ObjectDeleteOwner(b"x")
    text = repr(a)
    assert text.startswith("ObjectPut(") and ("<%d bytes>" % len(BIG)) in text and len(text) < 200


# --- round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
def test_round_trip_and_encode_parts(cls, variant):
    msg = make(cls, variant)
    payload = payload_of(msg)
    assert payload[0] == cls.TYPE
    for buf in (payload, bytearray(payload), memoryview(payload)):
        decoded = decode(buf)
        assert_same_fields(decoded, msg)
        assert decoded == msg
    # re-encoding what was decoded (memoryviews included) gives the same bytes
    frame = encode(msg)
    assert encode(decode(payload)) == frame
    # encode_parts() is the same frame as a list of buffers
    parts = encode_parts(msg)
    assert parts and all(isinstance(p, (bytes, bytearray, memoryview)) for p in parts)
    assert b"".join(parts) == frame
    assert sum(memoryview(p).nbytes for p in parts) == len(frame)


def test_large_bytes_are_not_copied_by_encode_parts_and_are_views_after_decode():
    msg = m.ObjectPut(b"oid", b"owner", BIG)
    parts = encode_parts(msg)
    assert any(p is BIG for p in parts), "a >64 KiB field should be passed through, not concatenated"
    decoded = decode(bytearray(payload_of(msg)))
    assert isinstance(decoded.payload, memoryview)
    assert bytes(decoded.payload) == BIG
    assert type(decoded.object_id) is bytes and decoded.object_id == b"oid"


def test_small_message_is_a_single_part():
    parts = encode_parts(m.Heartbeat(1.5))
    assert len(parts) == 1
    assert parts[0] == struct.pack("<Q", 9) + bytes([m.Heartbeat.TYPE]) + struct.pack("<d", 1.5)


def test_wire_layout_is_little_endian_header_then_variable_parts():
    frame = encode(m.TaskResult(b"tid", 3, b"PAY", "d\u00e9"))
    detail = "d\u00e9".encode("utf-8")
    header = struct.pack("<BBQQQ", m.TaskResult.TYPE, 3, 3, 3, len(detail))
    assert frame == struct.pack("<Q", len(header) + 9) + header + b"tid" + b"PAY" + detail


def test_message_without_fields():
    payload = payload_of(m.Accepted())
    assert payload == bytes([m.Accepted.TYPE])
    assert decode(payload) == m.Accepted()


@pytest.mark.parametrize("value", [0.0, -0.0, float("inf"), float("-inf"), 5e-324, -1.5])
def test_f64_bit_exact(value):
    got = decode(payload_of(m.Heartbeat(value))).sent_at
    assert struct.pack("<d", got) == struct.pack("<d", value)


def test_f64_nan():
    assert math.isnan(decode(payload_of(m.Heartbeat(float("nan")))).sent_at)


def test_bool_decodes_to_bool_and_nonzero_byte_is_true():
    assert decode(payload_of(m.ClientDisconnect(True))).shutdown is True
    assert decode(payload_of(m.ClientDisconnect(False))).shutdown is False
    assert decode(bytes([m.ClientDisconnect.TYPE, 2])).shutdown is True


def test_bytearray_and_memoryview_field_values_encode_like_bytes():
    ref = encode(m.ObjectPut(b"id", b"o", b"payload"))
    assert encode(m.ObjectPut(bytearray(b"id"), memoryview(b"o"), bytearray(b"payload"))) == ref
    ref_list = encode(m.ObjectDelete([b"a", b"bc"]))
    assert encode(m.ObjectDelete([bytearray(b"a"), memoryview(b"bc")])) == ref_list
    assert encode(m.ObjectDelete((b"a", b"bc"))) == ref_list


@pytest.mark.parametrize("msg", [
    m.ProcessorTask(b"t", 256, b"f", b"c", 0, b""),  # u8 overflow
    m.ProcessorTask(b"t", -1, b"f", b"c", 0, b""),
    m.Hello(m.MAGIC, 65536, 1, b"n"),  # u16 overflow
    m.WorkerConnect(b"w", "n", 2 ** 32, "", 1, "", 0.0, b""),  # u32 overflow
    m.WorkerHeartbeat(0.0, 0, 2 ** 64, 0.0),  # u64 overflow
    m.WorkerHeartbeat(0.0, 0, -1, 0.0),
    m.Heartbeat("not a float"),
])
def test_unencodable_fixed_values_raise_protocol_error(msg):
    with pytest.raises(ProtocolError):
        encode(msg)


@pytest.fixture
def all_kinds_message():
    """A scratch message with one field of every kind (no declared message has an i64).

    It is removed from the registry afterwards so declared_messages() is unaffected."""
    type_id = 254
    assert type_id not in codec._SPECS
    cls = codec.declare(type_id, "AllKinds", [("f_" + kind, kind) for kind in KINDS])
    try:
        yield cls
    finally:
        codec._SPECS.pop(type_id, None)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_round_trip_all_kinds(all_kinds_message, variant):
    msg = make(all_kinds_message, variant)
    decoded = decode(payload_of(msg))
    assert_same_fields(decoded, msg)
    assert decoded == msg
    assert b"".join(encode_parts(msg)) == encode(msg)


def test_i64_limits(all_kinds_message):
    for value in (-2 ** 63, -1, 0, 2 ** 63 - 1):
        msg = make(all_kinds_message, "typical")
        object.__setattr__(msg, "f_i64", value)
        assert decode(payload_of(msg)).f_i64 == value
    for value in (-2 ** 63 - 1, 2 ** 63):
        msg = make(all_kinds_message, "typical")
        object.__setattr__(msg, "f_i64", value)
        with pytest.raises(ProtocolError):
            encode(msg)


# --- malformed input --------------------------------------------------------------------------

def _decode_or_none(data):
    """decode(data), None on ProtocolError; any other exception fails the test with the input."""
    try:
        return decode(data)
    except ProtocolError:
        return None
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail("decode(%r) raised %s: %s" % (bytes(data)[:100], type(exc).__name__, exc))


@pytest.mark.parametrize("data", [
    b"",
    b"\x00",
    b"\xff",
    bytes([0]) + b"x" * 20,
    bytes([m.Accepted.TYPE, 0]),  # trailing byte
    bytes([m.Heartbeat.TYPE]) + b"\x00" * 7,  # one byte short
    bytes([m.Heartbeat.TYPE]) + b"\x00" * 9,  # one byte too many
    bytes([m.Rejected.TYPE]) + struct.pack("<Q", 2) + b"\xc3\x28",  # not UTF-8
    bytes([m.Rejected.TYPE]) + struct.pack("<Q", 2 ** 64 - 1) + b"ab",  # length overruns
    bytes([m.Rejected.TYPE]) + struct.pack("<Q", 1) + b"ab",  # trailing
    bytes([m.ObjectDelete.TYPE]) + struct.pack("<Q", 3) + b"abc",  # list shorter than its count
    bytes([m.ObjectDelete.TYPE]) + struct.pack("<QI", 4, 2 ** 32 - 1),  # 4 billion items announced
    bytes([m.ObjectDelete.TYPE]) + struct.pack("<QI", 4, 10 ** 7 + 1),
    bytes([m.ObjectDelete.TYPE]) + struct.pack("<QIQ", 12, 1, 5),  # item overruns its field
    bytes([m.ObjectDelete.TYPE]) + struct.pack("<QIQ", 13, 1, 0) + b"x",  # trailing in list
    bytes([m.ObjectDelete.TYPE]) + struct.pack("<QIQ", 12, 1, 2 ** 64 - 1),
])
def test_malformed_payloads_raise_protocol_error(data):
    start = time.perf_counter()
    with pytest.raises(ProtocolError):
        decode(data)
    assert time.perf_counter() - start < 0.5


def test_huge_list_count_is_rejected_without_allocating():
    data = bytes([m.ObjectDelete.TYPE]) + struct.pack("<QI", 4, 2 ** 32 - 1)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError):
            decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_fuzz_random_bytes():
    rng = random.Random(20240601)
    type_ids = [cls.TYPE for cls in MESSAGES]
    decoded = 0
    for i in range(4000):
        data = bytearray(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
        if data and i % 2:
            data[0] = rng.choice(type_ids)  # get past the type check most of the time
        if _decode_or_none(bytes(data)) is not None:
            decoded += 1
    assert decoded > 0  # sanity: some random inputs are valid fixed-size messages


def test_fuzz_random_bytes_with_plausible_lengths():
    """Headers with small variable lengths, so the variable-field paths are reached."""
    rng = random.Random(7)
    for cls in MESSAGES:
        spec = codec._SPECS[cls.TYPE]
        fixed_size = spec.struct.size - 1 - 8 * len(spec.variable)
        for _ in range(60):
            fixed_bytes = bytes(rng.getrandbits(8) for _ in range(fixed_size))
            lengths = [rng.randrange(0, 24) for _ in spec.variable]
            body = bytes(rng.getrandbits(8) for _ in range(sum(lengths) + rng.choice((-1, 0, 0, 1))))
            data = bytes([cls.TYPE]) + fixed_bytes + struct.pack("<%dQ" % len(lengths), *lengths) + body
            _decode_or_none(data)


def _valid_payloads(variants=SMALL_VARIANTS):
    for cls in MESSAGES:
        for variant in variants:
            yield cls, variant, payload_of(make(cls, variant))


def test_every_truncation_of_every_valid_message_raises_protocol_error():
    checked = 0
    for cls, variant, payload in _valid_payloads():
        for cut in range(len(payload)):
            with pytest.raises(ProtocolError):
                decode(payload[:cut])
            checked += 1
    assert checked > 10000


def test_truncations_of_large_messages():
    rng = random.Random(3)
    for cls, variant, payload in _valid_payloads(("large", "threshold")):
        if len(payload) < THRESHOLD:
            cuts = range(len(payload))
        else:
            cuts = set(range(0, 200)) | {len(payload) - k for k in range(1, 50)}
            cuts |= {rng.randrange(len(payload)) for _ in range(50)}
        view = memoryview(payload)
        for cut in cuts:
            with pytest.raises(ProtocolError):
                decode(view[:cut])


def test_every_single_byte_corruption_decodes_or_raises_protocol_error():
    rng = random.Random(99)
    for cls, variant, payload in _valid_payloads():
        header = codec._SPECS[cls.TYPE].struct.size
        positions = set(range(min(len(payload), header + 64)))  # header, lengths and list headers
        positions |= {rng.randrange(len(payload)) for _ in range(64)}
        for pos in sorted(positions):
            for _ in range(3):
                data = bytearray(payload)
                data[pos] ^= rng.randrange(1, 256)
                _decode_or_none(bytes(data))


def test_exhaustive_corruption_of_handshake_frames():
    """All 255 wrong values at every position of the frames accepted before authentication."""
    frames = [payload_of(m.Hello(m.MAGIC, m.PROTOCOL_VERSION, m.ROLE_CLIENT, b"n" * 32)),
              payload_of(m.Welcome(m.PROTOCOL_VERSION, True, b"n" * 32, b"p" * 32)),
              payload_of(m.Proof(b"p" * 32)), payload_of(m.Accepted()), payload_of(m.Rejected("why"))]
    for payload in frames:
        for pos in range(len(payload)):
            for delta in range(1, 256):
                data = bytearray(payload)
                data[pos] ^= delta
                _decode_or_none(bytes(data))


def test_appended_bytes_raise_protocol_error():
    for cls, variant, payload in _valid_payloads(("typical", "empty")):
        for extra in (b"\x00", b"\xff" * 9):
            with pytest.raises(ProtocolError):
                decode(payload + extra)


# --- frame_length -----------------------------------------------------------------------------

def test_frame_length_accepts_sizes_up_to_the_limit():
    assert frame_length(struct.pack("<Q", 1), 4 * GiB) == 1
    assert frame_length(struct.pack("<Q", 4 * GiB), 4 * GiB) == 4 * GiB
    assert frame_length(bytearray(struct.pack("<Q", 4096)), 4096) == 4096
    assert frame_length(memoryview(struct.pack("<Q", 17) + b"rest"), 100) == 17


def test_frame_length_rejects_100_gb_quickly_without_allocating():
    header = struct.pack("<Q", 100 * 10 ** 9)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ProtocolError) as info:
            frame_length(header, 4 * GiB)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 1024 * 1024
    assert "limit" in str(info.value)


@pytest.mark.parametrize("length", [4 * GiB + 1, 2 ** 63, 2 ** 64 - 1])
def test_frame_length_rejects_just_over_the_limit(length):
    with pytest.raises(ProtocolError):
        frame_length(struct.pack("<Q", length), 4 * GiB)


def test_frame_length_rejects_zero():
    with pytest.raises(ProtocolError):
        frame_length(b"\x00" * 8, 4 * GiB)
    with pytest.raises(ProtocolError):
        frame_length(b"\x00" * 8, 0)


def test_frame_length_handshake_limit():
    from scaler.protocol.handshake import HANDSHAKE_FRAME_LIMIT
    with pytest.raises(ProtocolError):
        frame_length(struct.pack("<Q", HANDSHAKE_FRAME_LIMIT + 1), HANDSHAKE_FRAME_LIMIT)


# --- BlockingChannel over a socketpair --------------------------------------------------------

@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(10)  # a hang becomes a failure, not a stuck test run
    b.settimeout(10)
    yield a, b
    a.close()
    b.close()


def _in_thread(fn, *args):
    errors = []

    def run():
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join():
        thread.join(10)
        assert not thread.is_alive(), "sender thread hung"
        if errors:
            raise errors[0]
    return join


def test_channel_small_messages_both_directions(pair):
    left, right = BlockingChannel(pair[0]), BlockingChannel(pair[1])
    left.send(m.ProcessorReady(1234, ""))
    right.send(m.ProcessorTask(b"task", 1, b"func", b"call", -7, b"owner"))
    assert right.recv() == m.ProcessorReady(1234, "")
    got = left.recv()
    assert got == m.ProcessorTask(b"task", 1, b"func", b"call", -7, b"owner")
    assert type(got.task_id) is bytes


def test_channel_writes_exactly_the_encoded_frame(pair):
    msg = m.TaskResult(b"t", m.STATUS_FAILED, b"", "tb \u2713")
    BlockingChannel(pair[0]).send(msg)
    expected = encode(msg)
    got = b""
    while len(got) < len(expected):
        got += pair[1].recv(65536)
    assert got == expected


def test_channel_3_mib_message(pair):
    payload = _pattern(3 * 1024 * 1024 + 5, 11)
    left, right = BlockingChannel(pair[0]), BlockingChannel(pair[1])
    join = _in_thread(left.send, m.ProcessorObject(b"obj", payload))
    got = right.recv()
    join()
    assert isinstance(got, m.ProcessorObject)
    assert got.object_id == b"obj"
    assert len(got.payload) == len(payload)
    assert bytes(got.payload) == payload


def test_channel_send_many_preserves_order_and_content(pair):
    big = _pattern(3 * 1024 * 1024, 12)
    msgs = [m.ProcessorReady(1, "")]
    msgs += [m.ProcessorObject(b"o%d" % i, b"x" * i) for i in range(50)]
    msgs += [m.ProcessorObject(b"big", big), m.ProcessorDropObjects([b"a", b"b"]),
             m.ProcessorTask(b"t", 0, b"f", BIG, 0, b""), m.Accepted()]
    left, right = BlockingChannel(pair[0]), BlockingChannel(pair[1])
    join = _in_thread(left.send_many, msgs)
    received = [right.recv() for _ in msgs]
    join()
    for got, want in zip(received, msgs):
        assert_same_fields(got, want)


def test_channel_many_frames_in_one_segment(pair):
    msgs = [m.Heartbeat(float(i)) for i in range(300)] + [m.Rejected("\U0001F40D" * i) for i in range(30)]
    pair[0].sendall(b"".join(encode(x) for x in msgs))
    right = BlockingChannel(pair[1])
    assert [right.recv() for _ in msgs] == msgs


def test_channel_frames_split_across_segments(pair):
    """Byte-by-byte delivery of header and payload still reassembles the messages."""
    msgs = [m.ObjectPut(b"id", b"owner", b"p" * 100), m.Heartbeat(2.0)]
    data = b"".join(encode(x) for x in msgs)
    right = BlockingChannel(pair[1])

    def dribble():
        for i in range(len(data)):
            pair[0].sendall(data[i:i + 1])
    join = _in_thread(dribble)
    assert [right.recv() for _ in msgs] == msgs
    join()


def test_channel_eof_on_peer_close(pair):
    right = BlockingChannel(pair[1])
    pair[0].close()
    with pytest.raises(EOFError):
        right.recv()


def test_channel_eof_after_last_message(pair):
    left, right = BlockingChannel(pair[0]), BlockingChannel(pair[1])
    left.send_many([m.Heartbeat(1.0), m.Heartbeat(2.0)])
    pair[0].close()
    assert right.recv() == m.Heartbeat(1.0)
    assert right.recv() == m.Heartbeat(2.0)
    with pytest.raises(EOFError):
        right.recv()


@pytest.mark.parametrize("cut", [3, 8, 12])
def test_channel_eof_mid_frame(pair, cut):
    pair[0].sendall(encode(m.ObjectPut(b"id", b"owner", b"x" * 64))[:cut])
    pair[0].close()
    with pytest.raises(EOFError):
        BlockingChannel(pair[1]).recv()


def test_channel_eof_mid_big_frame(pair):
    frame = encode(m.ProcessorObject(b"o", _pattern(2 * 1024 * 1024, 13)))

    def send_part():
        pair[0].sendall(frame[:len(frame) - 1000])
        pair[0].close()
    join = _in_thread(send_part)
    with pytest.raises(EOFError):
        BlockingChannel(pair[1]).recv()
    join()


def test_channel_enforces_max_frame_bytes(pair):
    left, right = BlockingChannel(pair[0]), BlockingChannel(pair[1], max_frame_bytes=1024)
    left.send(m.ProcessorObject(b"o", b"x" * 2000))
    with pytest.raises(ProtocolError):
        right.recv()


def test_channel_rejects_100_gb_announcement_quickly(pair):
    pair[0].sendall(struct.pack("<Q", 100 * 10 ** 9))
    start = time.perf_counter()
    with pytest.raises(ProtocolError):
        BlockingChannel(pair[1]).recv()
    assert time.perf_counter() - start < 0.5


def test_channel_malformed_payload_raises_protocol_error(pair):
    pair[0].sendall(struct.pack("<Q", 3) + b"\xfe\x00\x00")
    with pytest.raises(ProtocolError):
        BlockingChannel(pair[1]).recv()


# --- regressions: buffers of other formats and layouts ---

def test_decode_accepts_a_char_format_view():
    # (a signed 'b' view would likewise misread type ids >= 128; none is declared yet)
    msg = m.ObjectGetReply(b"id", True, b"data")
    assert _decode_or_none(memoryview(payload_of(msg)).cast("c")) == msg


def test_decode_non_contiguous_view_raises_only_protocol_error():
    payload = payload_of(m.ObjectGet(b"ab"))
    spread = bytes(b for x in payload for b in (x, 0))
    _decode_or_none(memoryview(spread)[::2])


def test_encode_of_non_byte_memoryview_is_consistent():
    import array
    value = memoryview(array.array("d", [1.0, 2.0]))  # 2 items, 16 bytes
    for msg, get in ((m.ObjectGet(value), lambda d: d.object_id),
                     (m.ObjectDelete([value]), lambda d: d.object_ids[0])):
        try:
            frame = encode(msg)
        except (ProtocolError, TypeError, ValueError):
            continue  # refusing the value is also acceptable
        decoded = _decode_or_none(frame[8:])
        assert decoded is not None and bytes(get(decoded)) == value.tobytes()


def test_generated_encoders_agree_with_the_reference_encoder():
    from scaler.protocol.codec import _encode_parts_generic
    for cls in MESSAGES:
        for variant in VARIANTS:
            msg = make(cls, variant)
            assert b"".join(encode_parts(msg)) == b"".join(_encode_parts_generic(msg)), cls.__name__


def test_generated_decoders_agree_with_the_reference_decoder():
    """Same messages from good frames, and a ProtocolError from the same bad ones."""
    from scaler.protocol.codec import _decode_generic
    rng = random.Random(11)
    for cls in MESSAGES:
        for variant in VARIANTS:
            frame = encode(make(cls, variant))[8:]
            assert decode(frame) == _decode_generic(frame), cls.__name__
            for _ in range(40):  # truncated, extended and corrupted copies of a valid frame
                bad = bytearray(frame)
                how = rng.randrange(3)
                if how == 0:
                    bad = bad[:rng.randrange(len(bad))]
                elif how == 1:
                    bad += bytes(rng.randrange(1, 9))
                else:
                    bad[rng.randrange(len(bad))] = rng.randrange(256)
                outcomes = []
                for fn in (decode, _decode_generic):
                    try:
                        outcomes.append(encode(fn(bytes(bad))))  # bytes: a NaN field equals itself
                    except ProtocolError as exc:
                        outcomes.append(("ProtocolError", str(exc)))
                assert outcomes[0] == outcomes[1], (cls.__name__, bytes(bad))


# --- "chunks": a payload given as a list of buffers, sent without being joined ---------------

@pytest.mark.parametrize("sizes", [[], [0], [3], [THRESHOLD + 5], [10, 0, THRESHOLD, 1], [1] * 70,
                                   [THRESHOLD // 2, THRESHOLD // 2]])
def test_chunk_lists_encode_like_the_joined_bytes(sizes):
    chunks = [_pattern(n, i) if n else b"" for i, n in enumerate(sizes)]
    chunks = [memoryview(c) if i % 2 else c for i, c in enumerate(chunks)]  # views and bytes mixed
    joined = b"".join(chunks)
    as_list = m.ObjectPut(b"i" * 32, b"owner", list(chunks))
    as_bytes = m.ObjectPut(b"i" * 32, b"owner", joined)
    assert encode(as_list) == encode(as_bytes)
    assert codec._encode_parts_generic(as_list) and b"".join(codec._encode_parts_generic(as_list)) == encode(as_bytes)
    decoded = decode(payload_of(as_list))
    assert bytes(decoded.payload) == joined


def test_big_chunks_are_sent_as_they_are_not_copied():
    big = _pattern(3 * THRESHOLD, 9)
    parts = codec.encode_parts(m.TaskResult(b"t" * 16, m.STATUS_OK, [b"head", big, b"tail"], ""))
    assert any(part is big for part in parts)  # the caller's own buffer, queued for sendmsg
    assert not any(len(part) == 0 for part in parts)
