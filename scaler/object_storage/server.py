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
            error = self.store.put(msg.object_id, msg.owner_id, msg.payload)
            if error:
                logger.warning("refused object from %s: %s", conn.peer, error)
            conn.send(ObjectPutReply(msg.object_id, error or ""))
        elif kind is ObjectDelete:
            self.store.delete(msg.object_ids)
        elif kind is ObjectDeleteOwner:
            self.store.delete_owner(msg.owner_id)
        else:
            conn.close("unexpected %s on the object storage address" % kind.__name__)

    def close(self) -> None:
        self.listener.close()
