"""The task Call (scaler/protocol/call.py) and the serialisation helpers beside it.

Built by the client, read by the agent and the processor: these tests build calls the
way the client does and read them back the way the worker does, and pin the encoding to
the generic codec so the wire format stays what it was.
"""

import pickle

import cloudpickle
import pytest

import scaler.protocol.call as call_module

from scaler.protocol.call import (ARG_INLINE, ARG_OBJECT, ARG_PACKED, ARG_PACKED_TEMP, ARG_TEMP, build_call,
                                  call_arguments, call_objects, packed_call, read_call)
from scaler.protocol.codec import ProtocolError, decode, encode
from scaler.protocol.messages import Call, TaskResult
from scaler.utility.serialization import BytesSerializer, dumps_arguments, dumps_result, only_builtin_scalars

BIG = bytes(range(256)) * 300  # > 64 KiB: decoded as a zero-copy view


class Ref:
    """Stands in for the client's ObjectReference."""

    def __init__(self, object_id):
        self.object_id = object_id


def ids():
    counter = iter(range(1000))
    return lambda: b"T%031d" % next(counter)


def encoded(serializer_id, kinds, names, values):
    return encode(Call(serializer_id, bytes(kinds), names, values))[8:]


def unpack(built, objects=None):
    """Read a built call back as the processor would, with cloudpickle and a store of objects."""
    store = dict(built.temp)
    store.update(objects or {})
    seen = []

    def get_object(object_id, temporary):
        seen.append((object_id, temporary))
        return cloudpickle.loads(store[object_id])

    args, kwargs = call_arguments(read_call(built.call), cloudpickle.loads, get_object)
    return args, kwargs, seen


# --- the fast path ---

@pytest.mark.parametrize("serializer_id, blob", [(b"", b""), (b"s" * 32, b"x" * 10), (b"", BIG), (b"s" * 255, b"x")])
def test_a_packed_call_is_its_pickle_and_two_bytes(serializer_id, blob):
    call = packed_call(serializer_id, blob)
    assert call == bytes((call_module.PACKED_CALL_TYPE, len(serializer_id))) + serializer_id + blob
    assert read_call(call) == read_call(encoded(serializer_id, [ARG_PACKED], [b""], [blob]))


def test_a_packed_call_with_a_serializer_id_over_255_bytes_is_generically_encoded():
    call = packed_call(b"s" * 256, b"x")
    assert call == encoded(b"s" * 256, [ARG_PACKED], [b""], [b"x"])
    assert read_call(call) == Call(b"s" * 256, bytes([ARG_PACKED]), [b""], [b"x"])


def test_no_message_type_is_the_packed_call_layout_byte():
    from scaler.protocol.codec import declared_messages
    assert call_module.PACKED_CALL_TYPE not in {m.TYPE for m in declared_messages()}


def test_a_packed_call_is_one_blob_and_needs_no_objects():
    built = build_call((1, "a"), {"k": None}, cloudpickle.dumps, ids(), pack=dumps_arguments)
    assert built.call == packed_call(b"", pickle.dumps(((1, "a"), {"k": None}), pickle.HIGHEST_PROTOCOL))
    assert not built.needs_objects and built.objects == () and built.temp == ()
    assert unpack(built)[:2] == ([1, "a"], {"k": None})


def test_a_large_packed_call_travels_as_one_temporary_object():
    built = build_call((BIG,), {}, cloudpickle.dumps, ids(), pack=dumps_arguments)
    (object_id, blob), = built.temp
    assert built.call == encoded(b"", [ARG_PACKED_TEMP], [b""], [object_id])
    assert built.needs_objects and built.objects == (object_id,)
    args, kwargs, seen = unpack(built)
    assert args == [BIG] and kwargs == {} and seen == [(object_id, True)]
    assert call_objects(read_call(built.call)) == ([object_id], [object_id])


def test_a_reference_turns_off_packing():
    ref = Ref(b"R" * 32)
    built = build_call((1, ref), {"x": 2}, cloudpickle.dumps, ids(), reference_type=Ref, pack=dumps_arguments)
    assert built.call == encoded(b"", [ARG_INLINE, ARG_OBJECT, ARG_INLINE], [b"", b"", b"x"],
                                 [cloudpickle.dumps(1), ref.object_id, cloudpickle.dumps(2)])
    assert built.needs_objects and built.objects == (ref.object_id,) and built.temp == ()
    args, kwargs, seen = unpack(built, {ref.object_id: cloudpickle.dumps("shared")})
    assert args == [1, "shared"] and kwargs == {"x": 2}
    assert seen == [(ref.object_id, False)], "a send_object payload is cached"


def test_a_reference_may_be_refused():
    def refuse(reference):
        raise LookupError("not yours")

    with pytest.raises(LookupError):
        build_call((Ref(b"R" * 32),), {}, cloudpickle.dumps, ids(), reference_type=Ref, reference_id=refuse)


# --- one value per argument (custom serializers) ---

def test_each_argument_alone_small_inline_large_as_temporary_objects():
    new_id = ids()
    built = build_call(("small", BIG), {"big": BIG, "n": 3}, cloudpickle.dumps, new_id, serializer_id=b"S" * 32)
    (id1, blob1), (id2, blob2) = built.temp
    assert built.call == encoded(b"S" * 32, [ARG_INLINE, ARG_TEMP, ARG_TEMP, ARG_INLINE], [b"", b"", b"big", b"n"],
                                 [cloudpickle.dumps("small"), id1, id2, cloudpickle.dumps(3)])
    assert built.needs_objects and built.objects == (id1, id2)
    call = read_call(built.call)
    assert call_objects(call) == ([b"S" * 32, id1, id2], [id1, id2])
    args, kwargs, seen = unpack(built)
    assert args == ["small", BIG] and kwargs == {"big": BIG, "n": 3}
    assert seen == [(id1, True), (id2, True)]


def test_inline_limit_is_inclusive():
    built = build_call((b"x",), {}, lambda v: b"1234", ids(), inline_limit=4)
    assert not built.needs_objects
    built = build_call((b"x",), {}, lambda v: b"12345", ids(), inline_limit=4)
    assert built.needs_objects and len(built.temp) == 1


def test_no_arguments():
    built = build_call((), {}, cloudpickle.dumps, ids())
    assert built.call == encoded(b"", [], [], [])
    assert unpack(built)[:2] == ([], {})
    assert call_objects(read_call(built.call)) == ([], [])


def test_keyword_names_may_be_any_unicode():
    built = build_call((), {"\u00e9t\u00e9": 1}, cloudpickle.dumps, ids())
    assert unpack(built)[1] == {"\u00e9t\u00e9": 1}


# --- reading ---

@pytest.mark.parametrize("blob", [
    b"",
    b"\xff" * 40,
    encode(TaskResult(b"t", 0, b"", ""))[8:],  # a well-formed message that is not a Call
    encoded(b"", [ARG_INLINE, ARG_INLINE], [b""], [b"a", b"b"]),  # one name for two values
    encoded(b"", [ARG_INLINE], [b""], [b"a", b"b"]),  # one kind for two values
    encoded(b"", [9], [b""], [b"a"]),  # an unknown kind
])
def test_read_call_refuses_what_is_not_a_well_formed_call(blob):
    with pytest.raises(ProtocolError):
        read_call(blob)


@pytest.mark.parametrize("serializer_id, blob", [(b"", b""), (b"s" * 32, b"x" * 10), (b"", BIG),
                                                  (b"s", b"\x00" * (65536 - 1))])
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_read_call_of_a_packed_call_is_what_the_generic_decoder_reads(serializer_id, blob, wrap):
    """read_call reads packed_call's layout as the generic decoder reads the same Call
    generically encoded: same fields, same types (bytes below the zero-copy threshold, a
    view of the frame from it on)."""
    data = wrap(packed_call(serializer_id, blob))
    fast, generic = read_call(data), decode(wrap(encoded(serializer_id, [ARG_PACKED], [b""], [blob])))
    assert fast == generic
    assert [type(v) for v in fast.values] == [type(v) for v in generic.values]
    assert type(fast.serializer_id) is type(generic.serializer_id) is bytes


@pytest.mark.parametrize("blob", [
    bytes([call_module.PACKED_CALL_TYPE]),  # no serializer length
    bytes([call_module.PACKED_CALL_TYPE, 5]) + b"abcd",  # a serializer id cut short
])
def test_a_truncated_packed_call_is_refused(blob):
    with pytest.raises(ProtocolError):
        read_call(blob)


@pytest.mark.parametrize("blob", [
    encoded(b"", [ARG_PACKED], [b""], [b"payload"]),  # the generic encoding of a packed call
    encoded(b"s" * 4, [ARG_INLINE], [b""], [b"payload"]),
    encoded(b"", [9], [b""], [b"a"]),  # an unknown kind
    encoded(b"", [ARG_PACKED], [b"", b""], [b"a"]),  # two names for one value
])
def test_a_generic_call_reads_as_the_generic_decoder_reads_it(blob, monkeypatch):
    """Only the packed layout takes the short way; anything else is read, or refused, as the
    generic decoder reads it."""
    fast = _outcome(blob)
    monkeypatch.setattr(call_module, "_read_packed_call", lambda _blob: None)
    assert fast == _outcome(blob)


def _outcome(blob):
    try:
        return read_call(blob)
    except ProtocolError:
        return ProtocolError


def test_call_objects_reads_large_ids_as_bytes():
    object_id = b"O" * 32
    call = read_call(encoded(b"", [ARG_OBJECT, ARG_INLINE], [b"", b""], [object_id, BIG]))
    needed, temp = call_objects(call)
    assert needed == [object_id] and type(needed[0]) is bytes and temp == []


# --- serialisation helpers ---

def test_dumps_arguments_uses_plain_pickle_for_builtin_scalars_only():
    plain = ((1, 2.5, "s", b"b", True, None, 1j), {"k": 3})
    assert only_builtin_scalars(*plain)
    assert dumps_arguments(plain) == pickle.dumps(plain, pickle.HIGHEST_PROTOCOL)
    fn = lambda: 42  # noqa: E731 - pickle cannot, cloudpickle can
    assert not only_builtin_scalars((fn,), {})
    assert not only_builtin_scalars((), {"f": [1]})
    assert cloudpickle.loads(dumps_arguments(((fn,), {})))[0][0]() == 42


def test_dumps_result_falls_back_to_cloudpickle():
    assert dumps_result([1, 2]) == pickle.dumps([1, 2], pickle.HIGHEST_PROTOCOL)
    fn = lambda: 7  # noqa: E731
    assert cloudpickle.loads(dumps_result(fn))() == 7


def test_bytes_serializer_hands_bytes_to_the_user_serializer():
    seen = []

    class Custom:
        @staticmethod
        def serialize(obj):
            return repr(obj).encode()

        @staticmethod
        def deserialize(payload):
            seen.append(type(payload))
            return payload.decode()

    wrapped = BytesSerializer(Custom())
    assert wrapped.serialize(5) == b"5"
    assert wrapped.deserialize(memoryview(b"abc")) == "abc"
    assert wrapped.deserialize(bytearray(b"x")) == "x"
    assert wrapped.deserialize(b"y") == "y"
    assert seen == [bytes, bytes, bytes]
