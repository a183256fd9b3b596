"""A handle to an object stored once in object storage and passed to many tasks."""

from typing import Any


class ObjectReference:
    """Returned by ``Client.send_object``; pass it as a task argument instead of the object.

    Immutable, as the frozen dataclass it used to be (written out: ``dataclasses`` imports
    ``inspect``, a few ms that ``import scaler`` does without)."""

    name: bytes
    size: int
    object_id: bytes

    def __init__(self, name: bytes, size: int, object_id: bytes) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "object_id", object_id)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("cannot assign to field %r: an ObjectReference is immutable" % name)

    def __delattr__(self, name: str) -> None:
        raise AttributeError("cannot delete field %r: an ObjectReference is immutable" % name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectReference) and other.object_id == self.object_id

    def __hash__(self) -> int:
        return hash(self.object_id)

    def __repr__(self) -> str:
        return "ObjectReference(name=%r, size=%d, object_id=%s)" % (self.name, self.size, self.object_id.hex())
