"""The object store itself: blobs by id, with owners. Pure data structure, no I/O.

A blob is a buffer, or a :class:`~scaler.io.shm.Segment` (a memfd shared with peers on this
host): its descriptor is closed the moment the object is deleted or replaced, and the
memory goes once no peer maps it any more. Both count the same against ``max_bytes``.
"""

from typing import Any, Dict, Iterable, Optional, Set

from ..io.shm import Segment
from ..protocol.codec import Buffer

OBJECT_ID_BYTES = 32


class ObjectStore:
    """Blobs keyed by 32-byte ids. Each belongs to an owner (a client) and dies with it."""

    def __init__(self, max_bytes: int = 0) -> None:
        self.max_bytes = max_bytes  # 0: unbounded
        self.total_bytes = 0
        self._objects: Dict[bytes, Any] = {}  # a Buffer or a Segment
        self.segments = 0  # objects held as Segments (one descriptor each)
        self._owner_of: Dict[bytes, bytes] = {}
        self._by_owner: Dict[bytes, Set[bytes]] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, object_id: bytes) -> bool:
        return object_id in self._objects

    def put(self, object_id: bytes, owner: bytes, payload: Any) -> Optional[str]:
        """Store (or overwrite) an object; return an error message instead of raising.
        A refused Segment is left to the caller to close."""
        error = self.check(object_id, len(payload))
        if error:
            return error
        old = self._objects.get(object_id)
        growth = len(payload) - (len(old) if old is not None else 0)
        if old is not None:
            self._forget_owner(object_id)
            self._release(old)
        if type(payload) is Segment:
            self.segments += 1
        self._objects[object_id] = payload
        self.total_bytes += growth
        self._owner_of[object_id] = owner
        self._by_owner.setdefault(owner, set()).add(object_id)
        return None

    def check(self, object_id: bytes, size: int) -> Optional[str]:
        """Why an object of ``size`` bytes could not be stored under ``object_id``, if it could not."""
        if len(object_id) != OBJECT_ID_BYTES:
            return "object id must be %d bytes, got %d" % (OBJECT_ID_BYTES, len(object_id))
        old = self._objects.get(object_id)
        growth = size - (len(old) if old is not None else 0)
        if self.max_bytes and self.total_bytes + growth > self.max_bytes:
            return ("object storage is full: storing %d bytes would exceed the limit of %d bytes "
                    "(%d in use)" % (size, self.max_bytes, self.total_bytes))
        return None

    def get(self, object_id: bytes) -> Any:
        """The object's buffer, or its Segment; None if there is none."""
        return self._objects.get(object_id)

    def delete(self, object_ids: Iterable[bytes]) -> int:
        count = 0
        for object_id in object_ids:
            payload = self._objects.pop(object_id, None)
            if payload is None:
                continue
            count += 1
            self.total_bytes -= len(payload)
            self._forget_owner(object_id)
            self._release(payload)
        return count

    def clear(self) -> None:
        """Drop everything (the server is closing): every shared-memory descriptor is closed."""
        self.delete(list(self._objects))

    def _release(self, payload: Any) -> None:
        if type(payload) is Segment:
            self.segments -= 1
            payload.close()

    def delete_owner(self, owner: bytes) -> int:
        return self.delete(list(self._by_owner.get(owner, ())))

    def _forget_owner(self, object_id: bytes) -> None:
        owner = self._owner_of.pop(object_id, None)
        if owner is None:
            return
        owned = self._by_owner.get(owner)
        if owned is not None:
            owned.discard(object_id)
            if not owned:
                del self._by_owner[owner]
