"""A handle to an object stored once in object storage and passed to many tasks."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ObjectReference:
    """Returned by ``Client.send_object``; pass it as a task argument instead of the object."""

    name: bytes
    size: int
    object_id: bytes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectReference) and other.object_id == self.object_id

    def __hash__(self) -> int:
        return hash(self.object_id)

    def __repr__(self) -> str:
        return "ObjectReference(name=%r, size=%d, object_id=%s)" % (self.name, self.size, self.object_id.hex())
