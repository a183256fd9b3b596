"""The task ``Call``: the one place that knows its layout.

A Call is the argument list of a task. The client builds it (:func:`build_call`, or
:func:`packed_call` on the fast path), the scheduler forwards it as opaque bytes, the
worker agent reads which objects it needs (:func:`call_objects`) and the processor turns
it into ``(args, kwargs)`` (:func:`call_arguments`). Its fields are declared with the
other messages (``messages.Call``, type 60) but it is never a frame of its own; it travels
encoded, without the frame's length prefix, in ``TaskSubmit.call`` / ``WorkerTask.call``.

Each value has a kind byte (``ARG_*``). Values of the *object* kinds are object ids the
worker fetches from object storage before the task runs; of those, the *temporary* ones
were stored for this one task (an argument too large to travel inline), so the worker
uses them once and does not cache them, and the client deletes them when the task ends.

Nothing here (de)serialises: the caller passes the functions that do.
"""

import itertools
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

try:
    from _blake2 import blake2b  # what hashlib.blake2b is; importing hashlib also loads OpenSSL (~2 ms)
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import blake2b

from .codec import FRAME_HEADER, ZERO_COPY_THRESHOLD, Buffer, Message, ProtocolError, decode, encode
from .messages import Call

# Call.kinds: one byte per value.
ARG_INLINE = 0  # value: one serialised argument
ARG_OBJECT = 1  # value: id of a send_object payload (kept in the worker's cache)
ARG_PACKED = 2  # value: the serialised (args, kwargs) pair of the whole call
ARG_PACKED_TEMP = 3  # value: id of a serialised (args, kwargs) pair too large to travel inline
ARG_TEMP = 4  # value: id of one argument too large to travel inline
OBJECT_KINDS = frozenset((ARG_OBJECT, ARG_PACKED_TEMP, ARG_TEMP))  # kinds whose value is an object id
TEMP_KINDS = frozenset((ARG_PACKED_TEMP, ARG_TEMP))  # used by one task only: not cached on the worker
_KNOWN_KINDS = frozenset((ARG_INLINE, ARG_OBJECT, ARG_PACKED, ARG_PACKED_TEMP, ARG_TEMP))

INLINE_LIMIT = 64 * 1024  # serialised arguments above this go through object storage

_PACKED_KIND = bytes((ARG_PACKED,))
# A packed call (nearly every task's) has a layout of its own: this byte (no message type:
# tests check), the serializer id's length (one byte) and the id, then the pickle. 2 bytes
# around the pickle instead of the 58 of the generic Call encoding, which the scheduler
# keeps for each queued task and every hop carries. Any other Call is generically encoded.
PACKED_CALL_TYPE = 0xBC
_FRAME_PREFIX = FRAME_HEADER.size  # encode() puts a length prefix before a message; a Call travels without it
_NO_IDS: Tuple[bytes, ...] = ()
_NO_PUTS: Tuple[Tuple[bytes, bytes], ...] = ()


class BuiltCall(NamedTuple):
    """What building a Call gives the client.

    ``objects``: ids the call refers to (``send_object`` references and temporary objects);
    the task may be sent once each is stored. ``temp``: the temporary objects as
    ``(object_id, payload)``, to store before sending and to delete when the task ends.
    """

    call: bytes
    needs_objects: bool  # the worker must read the Call to fetch objects (FLAG_NEEDS_OBJECTS)
    objects: Tuple[bytes, ...]
    temp: Tuple[Tuple[bytes, bytes], ...]


def packed_call(serializer_id: bytes, blob: bytes) -> bytes:
    """``Call(serializer_id, ARG_PACKED, [b""], [blob])`` in the packed layout (see
    ``PACKED_CALL_TYPE``): what nearly every task carries, built in one join. A serializer
    id over 255 bytes (never one of ours) gets the generic encoding."""
    if len(serializer_id) > 255:
        return encode(Call(serializer_id, _PACKED_KIND, [b""], [blob]))[_FRAME_PREFIX:]
    return b"".join((bytes((PACKED_CALL_TYPE, len(serializer_id))), serializer_id, blob))


def build_call(args: Sequence[Any], kwargs: Mapping[str, Any], serialize: Callable[[Any], bytes],
               new_object_id: Callable[[], bytes], serializer_id: bytes = b"",
               reference_type: Optional[type] = None,
               reference_id: Callable[[Any], bytes] = lambda reference: reference.object_id,
               pack: Optional[Callable[[Tuple[Any, Any]], bytes]] = None,
               inline_limit: int = INLINE_LIMIT) -> BuiltCall:
    """Encode the call ``fn(*args, **kwargs)`` (the function travels beside it, by id).

    ``reference_type``: arguments of exactly this type are ``send_object`` references and
    travel as the id ``reference_id`` gives (it may raise to refuse one). ``pack``:
    serialise the whole ``(args, kwargs)`` pair as one value with it (the default
    serializer: one pickle per task, not one per argument); used when no argument is a
    reference.
    Otherwise each argument is serialised alone with ``serialize``. A serialised value
    above ``inline_limit`` becomes a temporary object with an id from ``new_object_id``.
    """
    if pack is not None and not _has_reference(args, kwargs, reference_type):
        blob = pack((args, kwargs))
        if len(blob) <= inline_limit:
            return BuiltCall(packed_call(serializer_id, blob), False, _NO_IDS, _NO_PUTS)
        object_id = new_object_id()
        call = encode(Call(serializer_id, bytes((ARG_PACKED_TEMP,)), [b""], [object_id]))[_FRAME_PREFIX:]
        return BuiltCall(call, True, (object_id,), ((object_id, blob),))
    kinds: List[int] = []
    names: List[bytes] = []
    values: List[Any] = []
    objects: List[bytes] = []
    temp: List[Tuple[bytes, bytes]] = []
    for name, arg in itertools.chain(((None, a) for a in args), kwargs.items()):
        names.append(name.encode("utf-8") if name else b"")
        if reference_type is not None and type(arg) is reference_type:
            object_id = reference_id(arg)
            kinds.append(ARG_OBJECT)
            values.append(object_id)
            objects.append(object_id)
            continue
        blob = serialize(arg)
        if len(blob) <= inline_limit:
            kinds.append(ARG_INLINE)
            values.append(blob)
        else:
            object_id = new_object_id()
            temp.append((object_id, blob))
            objects.append(object_id)
            kinds.append(ARG_TEMP)
            values.append(object_id)
    call = encode(Call(serializer_id, bytes(kinds), names, values))[_FRAME_PREFIX:]
    return BuiltCall(call, bool(objects), tuple(objects), tuple(temp))


def graph_result_id(task_id: bytes) -> bytes:
    """The object id under which a graph node's result is stored (``FLAG_KEEP_RESULT``):
    derived from its task id, so its readers' Calls can name it before it exists."""
    return blake2b(task_id, digest_size=32, person=b"scaler-result").digest()


def graph_node_call(serializer_id: bytes, function_id: bytes, template: Buffer, template_is_object: bool,
                    input_ids: Sequence[bytes]) -> bytes:
    """The Call of one graph node: ``run_node(function, template, *inputs)``.

    The node's function is a stored object (cached on the worker, like a ``send_object``
    one); its argument template travels inline, or as a temporary object when large; each
    input is the result another node stored under :func:`graph_result_id` of its task
    id, read once (temporary kind:
    the worker does not cache it, and the scheduler, not the client, deletes it).
    """
    kinds = bytes([ARG_OBJECT, ARG_TEMP if template_is_object else ARG_INLINE] + [ARG_TEMP] * len(input_ids))
    values = [function_id, template]
    values.extend(input_ids)
    return encode(Call(serializer_id, kinds, [b""] * len(values), values))[_FRAME_PREFIX:]


def _has_reference(args: Sequence[Any], kwargs: Mapping[str, Any], reference_type: Optional[type]) -> bool:
    if reference_type is None:
        return False
    for arg in args:
        if type(arg) is reference_type:
            return True
    for arg in kwargs.values():
        if type(arg) is reference_type:
            return True
    return False



def read_call(blob: Buffer) -> Message:
    """Decode an encoded Call; raise :class:`ProtocolError` for anything else.

    Checks what the generic decoder cannot: that it is a Call, with one kind and one name
    per value, and kinds this version knows.
    """
    call = _read_packed_call(blob)
    if call is not None:
        return call
    call = decode(blob)
    if type(call) is not Call:
        raise ProtocolError("expected a Call, got %s" % type(call).__name__)
    kinds = call.kinds
    if not len(kinds) == len(call.names) == len(call.values):
        raise ProtocolError("Call has %d kinds, %d names and %d values"
                            % (len(kinds), len(call.names), len(call.values)))
    for kind in kinds:
        if kind not in _KNOWN_KINDS:
            raise ProtocolError("Call has an unknown argument kind %d" % kind)
    return call


def _read_packed_call(blob: Buffer) -> Optional[Message]:
    """The Call :func:`packed_call` wrote, as the generic decoder would give it (the pickle as
    bytes, or as a view of the blob from ZERO_COPY_THRESHOLD on); ``None`` for a
    generically encoded Call."""
    size = len(blob)
    if not size or blob[0] != PACKED_CALL_TYPE:
        return None
    if size < 2 or size < 2 + blob[1]:
        raise ProtocolError("packed Call shorter than its serializer id")
    start = 2 + blob[1]
    serializer_id = bytes(blob[2:start])
    value = bytes(blob[start:]) if size - start < ZERO_COPY_THRESHOLD else memoryview(blob)[start:]
    return Call(serializer_id, _PACKED_KIND, [b""], [value])


def call_objects(call: Message) -> Tuple[List[bytes], List[bytes]]:
    """The object ids a (read) Call needs on the worker besides its function, and the
    subset of them that are temporary (used once by this task: not to be cached).

    The serializer's id comes first when the call names one.
    """
    needed = [call.serializer_id] if call.serializer_id else []
    temp: List[bytes] = []
    for kind, value in zip(call.kinds, call.values):
        if kind in OBJECT_KINDS:
            object_id = bytes(value)
            needed.append(object_id)
            if kind in TEMP_KINDS:
                temp.append(object_id)
    return needed, temp


def call_arguments(call: Message, deserialize: Callable[[Any], Any],
                   get_object: Callable[[bytes, bool], Any]) -> Tuple[List[Any], Dict[str, Any]]:
    """Turn a (read) Call into ``(args, kwargs)``.

    ``deserialize`` reads an inline value; ``get_object(object_id, temporary)`` returns the
    deserialised object (the processor caches it unless ``temporary``).
    """
    args: List[Any] = []
    kwargs: Dict[str, Any] = {}
    for kind, name, value in zip(call.kinds, call.names, call.values):
        if kind == ARG_PACKED or kind == ARG_PACKED_TEMP:
            packed = deserialize(value) if kind == ARG_PACKED else get_object(bytes(value), True)
            args.extend(packed[0])
            kwargs.update(packed[1])
            continue
        if kind == ARG_INLINE:
            arg = deserialize(value)
        else:
            arg = get_object(bytes(value), kind in TEMP_KINDS)
        if name:
            kwargs[name.decode("utf-8")] = arg
        else:
            args.append(arg)
    return args, kwargs


__all__ = ["ARG_INLINE", "ARG_OBJECT", "ARG_PACKED", "ARG_PACKED_TEMP", "ARG_TEMP", "OBJECT_KINDS", "TEMP_KINDS",
           "INLINE_LIMIT", "BuiltCall", "build_call", "call_arguments", "call_objects", "graph_node_call", "graph_result_id", "packed_call",
           "read_call"]
