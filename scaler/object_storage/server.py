"""The object storage server: an :class:`ObjectStore` behind a listening socket.

It runs on any event loop, so the scheduler can host it in its own process (the default:
one process fewer on the data path) or ``python -m scaler.object_storage`` runs it alone.
"""

import logging
from typing import Any, Optional

from ..io.connection import DEFAULT_MAX_FRAME_BYTES, Connection, Handler, Listener
from ..io.loop import EventLoop
from ..protocol.codec import Message
from ..protocol.messages import (ROLE_CLIENT, ROLE_SCHEDULER, ROLE_WORKER, ObjectDelete, ObjectDeleteOwner,
                                 ObjectGet, ObjectGetReply, ObjectPut, ObjectPutReply)
from .store import ObjectStore

logger = logging.getLogger(__name__)


class ObjectStorageServer(Handler):
    def __init__(self, loop: EventLoop, sock, address: str, auth_key: Optional[bytes], store: ObjectStore,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, tls: Any = None) -> None:
        self.store = store
        self.address = address
        self.listener = Listener(loop, sock, self, address=address, auth_key=auth_key,
                                 allowed_roles=(ROLE_CLIENT, ROLE_WORKER, ROLE_SCHEDULER),
                                 max_frame_bytes=max_frame_bytes, tls=tls)

    def message_received(self, conn: Connection, msg: Message) -> None:
        kind = type(msg)
        if kind is ObjectGet:
            payload = self.store.get(msg.object_id)
            conn.send(ObjectGetReply(msg.object_id, payload is not None, b"" if payload is None else payload))
        elif kind is ObjectPut:
            error = self._owner_error(conn, msg.owner_id) or self.store.put(msg.object_id, msg.owner_id, msg.payload)
            if error:
                logger.warning("refused object from %s: %s", conn.peer, error)
            conn.send(ObjectPutReply(msg.object_id, error or ""))
        elif kind is ObjectDelete:
            self.store.delete(msg.object_ids)
        elif kind is ObjectDeleteOwner and conn.peer_role == ROLE_SCHEDULER:
            self.store.delete_owner(msg.owner_id)
        else:
            conn.close("unexpected %s on the object storage address" % kind.__name__)

    @staticmethod
    def _owner_error(conn: Connection, owner_id: bytes) -> str:
        """A client stores objects under one owner id, its own: the first it uses on this
        connection. Everything it stored goes when the connection does (``connection_closed``),
        so an object put under an id nobody will ever free cannot outlive its sender."""
        if conn.peer_role != ROLE_CLIENT:
            return ""  # workers store results for the task's client; the scheduler frees those
        if conn.data is None:
            if not owner_id:
                return "an object needs an owner id"
            conn.data = bytes(owner_id)
            return ""
        if owner_id != conn.data:
            return "a client stores objects under its own id only"
        return ""

    def connection_closed(self, conn: Connection, reason: str) -> None:
        if conn.peer_role == ROLE_CLIENT and conn.data is not None:
            self.store.delete_owner(conn.data)

    def close(self) -> None:
        self.listener.close()
