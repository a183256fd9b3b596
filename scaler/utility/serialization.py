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
"""

import pickle
from typing import Any, Dict, Sequence, Tuple

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


def dumps_result(value: Any) -> bytes:
    """Serialise a task's result with the default serializer: pickle where it can,
    cloudpickle where it must (see the module docstring for why this is safe here)."""
    try:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle
        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class BytesSerializer:
    """A user's serializer, handed ``bytes`` as promised (big payloads arrive as views)."""

    __slots__ = ("inner",)

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def serialize(self, obj: Any) -> bytes:
        return self.inner.serialize(obj)

    def deserialize(self, payload: Any) -> Any:
        return self.inner.deserialize(payload if type(payload) is bytes else bytes(payload))


__all__ = ["BytesSerializer", "dumps_arguments", "dumps_result", "only_builtin_scalars"]
