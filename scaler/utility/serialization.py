"""Serialisation helpers shared by the client and the processor.

Two ``dumps`` that differ on purpose, because plain ``pickle`` is several times faster
than cloudpickle for small values but pickles functions and classes *by reference*:

* :func:`dumps_arguments` (client side): in the client, ``__main__`` is the user's script,
  which workers cannot import; so plain pickle only for builtin scalars (where it makes
  the bytes cloudpickle would), cloudpickle for everything else.
* :func:`dumps_result` (processor side): in a processor, ``__main__`` is the processor
  module, so plain pickle *fails* on anything only cloudpickle can rebuild; try pickle,
  fall back to cloudpickle.

:class:`BytesSerializer` wraps a user's custom serializer so it is handed ``bytes`` as
documented, although large payloads arrive as zero-copy ``memoryview`` slices.

**No copy of big buffers when pickling.** ``pickle.dump`` into a file hands every buffer of
64 KiB or more (``bytes``, ``bytearray``, a NumPy array's data through protocol 5's
``PickleBuffer``) to the file's ``write`` as the object itself, after the small frames
before it. :class:`ChunkWriter` keeps those objects instead of copying them, so a pickle
comes out as a list of chunks ("chunks" fields of the protocol send them back to back with
``sendmsg``, ``shm.write_all`` writes them into a memfd): the one copy of a 200 MB payload
is the one into the socket or the shared memory, not an extra ``pickle.dumps`` buffer.
The buffers are referenced, not copied: they must not change until the payload is sent
(``send_object`` waits for the store's acknowledgement; a task's result is its own).
"""

import pickle
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

# cloudpickle (~7 ms to import, with dataclasses and inspect) is imported by the first call
# that needs it: a process that only moves builtin scalars never loads it.

_PLAIN_TYPES = frozenset((int, float, str, bytes, bool, type(None), complex))


def only_builtin_scalars(args: Sequence[Any], kwargs: Dict[str, Any]) -> bool:
    """True when every argument is a builtin scalar (plain pickle is then safe and equal)."""
    plain = _PLAIN_TYPES
    for arg in args:
        if type(arg) not in plain:
            return False
    for arg in kwargs.values():
        if type(arg) not in plain:
            return False
    return True


def dumps_arguments(pair: Tuple[Sequence[Any], Dict[str, Any]]) -> bytes:
    """Serialise a call's ``(args, kwargs)`` with the default serializer, fast when plain."""
    if only_builtin_scalars(pair[0], pair[1]):
        return pickle.dumps(pair, pickle.HIGHEST_PROTOCOL)
    import cloudpickle
    return cloudpickle.dumps(pair, protocol=pickle.HIGHEST_PROTOCOL)


Payload = Union[bytes, memoryview, List[Any]]  # one buffer, or chunks to send back to back
_JOIN_BELOW = 64 * 1024  # a pickle smaller than this is joined into one bytes (one small frame)


class ChunkWriter:
    """A write-only file for ``pickle.dump`` that keeps what it is given (see the module doc)."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: List[Any] = []
        self.size = 0

    def write(self, data: Any) -> int:
        if type(data) is not bytes:
            data = memoryview(data).cast("B")  # bytearray, PickleBuffer...: a view, not a copy
        n = len(data)
        if n:
            self.chunks.append(data)
            self.size += n
        return n

    def payload(self) -> Payload:
        chunks = self.chunks
        if len(chunks) == 1:
            return chunks[0]
        if self.size < _JOIN_BELOW:
            return b"".join(chunks)
        return chunks


def dump_chunks(value: Any, dump: Callable[[Any, Any], None]) -> Payload:
    """``dump(value, file)`` into a :class:`ChunkWriter`: the pickle as chunks."""
    writer = ChunkWriter()
    dump(value, writer)
    return writer.payload()


def _pickle_dump(value: Any, file: Any) -> None:
    pickle.dump(value, file, pickle.HIGHEST_PROTOCOL)


def cloudpickle_dump(value: Any, file: Any) -> None:
    import cloudpickle  # imported by the first value plain pickle cannot take
    cloudpickle.dump(value, file, protocol=pickle.HIGHEST_PROTOCOL)


def payload_size(payload: Payload) -> int:
    """Bytes in a payload (one buffer, or chunks)."""
    if type(payload) is bytes:
        return len(payload)
    if type(payload) is list:
        return sum(len(chunk) if type(chunk) is bytes else memoryview(chunk).nbytes for chunk in payload)
    return memoryview(payload).nbytes


def dumps_result(value: Any) -> Payload:
    """Serialise a task's result with the default serializer: pickle where it can,
    cloudpickle where it must (see the module docstring for why this is safe here).
    A big result comes back as chunks, its big buffers not copied."""
    try:
        return dump_chunks(value, _pickle_dump)
    except Exception:
        return dump_chunks(value, cloudpickle_dump)


class BytesSerializer:
    """A user's serializer, handed ``bytes`` as promised (big payloads arrive as views)."""

    __slots__ = ("inner",)

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def serialize(self, obj: Any) -> bytes:
        return self.inner.serialize(obj)

    def deserialize(self, payload: Any) -> Any:
        if type(payload) is bytes:
            return self.inner.deserialize(payload)
        read_all = getattr(payload, "read_all", None)  # a result in shared memory (shm.SharedPayload)
        return self.inner.deserialize(read_all() if read_all is not None else bytes(payload))


def loads_payload(payload: Any) -> Any:
    """The default serializer's ``deserialize`` on the client: ``pickle.loads``, or
    ``pickle.load`` from a result in shared memory (``shm.SharedPayload.reader``), which
    reads its big buffers straight into the objects they become."""
    if type(payload) is bytes:  # the common case: no attribute lookup that fails per result
        return pickle.loads(payload)
    reader = getattr(payload, "reader", None)
    if reader is not None:
        return pickle.load(reader())
    return pickle.loads(payload)


__all__ = ["BytesSerializer", "ChunkWriter", "Payload", "cloudpickle_dump", "dump_chunks", "dumps_arguments",
           "dumps_result", "loads_payload", "only_builtin_scalars", "payload_size"]
