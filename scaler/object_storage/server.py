"""The object storage server: an :class:`ObjectStore` behind a listening socket.

It runs on any event loop, so the scheduler can host it in its own process (the default:
one process fewer on the data path) or ``python -m scaler.object_storage`` runs it alone.

Peers on the same host share big objects through memfds instead of the socket
(``scaler/io/shm.py``): each client or worker connection is offered the server's probe;
one that proves it read it gets ``ObjectGetShm`` references instead of bytes for objects
held in memfds, and one whose own probe the server could read may store objects with
``ObjectPutShm`` (the server opens the peer's sealed memfd and keeps a descriptor of it:
no byte is copied). At most half the descriptors the process may open are spent on
objects; past that an adopted memfd is kept as a mapping and served through the socket.
"""

import logging
import os
from typing import Any, Dict, Optional, Tuple

from ..io import shm
from ..io.connection import DEFAULT_MAX_FRAME_BYTES, Connection, Handler, Listener
from ..io.loop import EventLoop
from ..protocol.codec import Message
from ..protocol.messages import (ROLE_CLIENT, ROLE_SCHEDULER, ROLE_WORKER, ObjectDelete, ObjectDeleteOwner,
                                 ObjectGet, ObjectGetBytes, ObjectGetReply, ObjectGetShm, ObjectPut, ObjectPutReply,
                                 ObjectPutShm, ObjectShmAccept, ObjectShmOffer, ObjectShmReady)
from .store import ObjectStore

logger = logging.getLogger(__name__)


class ObjectStorageServer(Handler):
    def __init__(self, loop: EventLoop, sock, address: str, auth_key: Optional[bytes], store: ObjectStore,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, tls: Any = None) -> None:
        self.store = store
        self.address = address
        self.probe: Optional[shm.Probe] = None
        if shm.available():
            try:
                self.probe = shm.Probe()
            except OSError as exc:
                logger.info("no shared memory for objects: %s", exc)
        self.max_segments = _max_segments()
        self._shm_peers: Dict[Connection, Tuple[bool, int]] = {}  # conn -> (shared reads, pid for shared puts)
        # Figures, for logs and tests.
        self.shm_gets = self.shm_puts = self.socket_gets = self.socket_puts = 0
        self.listener = Listener(loop, sock, self, address=address, auth_key=auth_key,
                                 allowed_roles=(ROLE_CLIENT, ROLE_WORKER, ROLE_SCHEDULER),
                                 max_frame_bytes=max_frame_bytes, tls=tls)

    def connection_open(self, conn: Connection) -> None:
        if conn.peer_role in (ROLE_CLIENT, ROLE_WORKER):
            probe = self.probe
            if probe is not None and probe.fd >= 0:
                conn.send(ObjectShmOffer(os.getpid(), probe.fd, probe.token))
            else:
                conn.send(ObjectShmOffer(0, 0, ""))

    def message_received(self, conn: Connection, msg: Message) -> None:
        kind = type(msg)
        if kind is ObjectGet or kind is ObjectGetBytes:
            payload = self.store.get(msg.object_id)
            if type(payload) is shm.Segment:
                shared = kind is ObjectGet and payload.fd >= 0 and self._shm_peers.get(conn, (False, 0))[0]
                if shared:
                    self.shm_gets += 1
                    conn.send(ObjectGetShm(msg.object_id, payload.fd, payload.token, 0, payload.size))
                    return
                payload = payload.view()
            if payload is not None:
                self.socket_gets += 1
            conn.send(ObjectGetReply(msg.object_id, payload is not None, b"" if payload is None else payload))
        elif kind is ObjectPut:
            error = self._owner_error(conn, msg.owner_id) or self.store.put(msg.object_id, msg.owner_id, msg.payload)
            if error:
                logger.warning("refused object from %s: %s", conn.peer, error)
            else:
                self.socket_puts += 1
            conn.send(ObjectPutReply(msg.object_id, error or ""))
        elif kind is ObjectPutShm:
            error = self._owner_error(conn, msg.owner_id) or self._put_shared(conn, msg)
            if error:
                logger.warning("refused object from %s: %s", conn.peer, error)
            conn.send(ObjectPutReply(msg.object_id, error or ""))
        elif kind is ObjectDelete:
            self.store.delete(msg.object_ids)
        elif kind is ObjectDeleteOwner and conn.peer_role == ROLE_SCHEDULER:
            self.store.delete_owner(msg.owner_id)
        elif kind is ObjectShmAccept and conn.peer_role in (ROLE_CLIENT, ROLE_WORKER) and conn not in self._shm_peers:
            self._shm_accept(conn, msg)
        else:
            conn.close("unexpected %s on the object storage address" % kind.__name__)

    def _shm_accept(self, conn: Connection, msg: Message) -> None:
        """The peer answers our offer: shared reads if it read our nonce, shared puts if we can
        read its probe's."""
        probe = self.probe
        reads = probe is not None and len(msg.nonce) == len(probe.nonce) and bytes(msg.nonce) == probe.nonce
        pid = 0
        if reads and msg.pid:
            try:
                if shm.read_probe(msg.pid, msg.fd, msg.token) == bytes(msg.peer_nonce):
                    pid = msg.pid
            except shm.ShmError as exc:
                logger.debug("cannot read the shared memory probe of %s: %s", conn.peer, exc)
        self._shm_peers[conn] = (reads, pid)
        logger.debug("%s: shared memory reads %s, puts %s", conn.peer, "on" if reads else "off",
                     "on" if pid else "off")
        conn.send(ObjectShmReady(reads, bool(pid)))

    def _put_shared(self, conn: Connection, msg: Message) -> str:
        """Adopt the peer's sealed memfd as the object: no byte is copied."""
        pid = self._shm_peers.get(conn, (False, 0))[1]
        if not pid:
            return "shared memory puts are not enabled on this connection"
        error = self.store.check(msg.object_id, msg.size)
        if error:
            return error
        try:
            fd = shm.open_peer(pid, msg.fd, msg.token, msg.size, shm.SEALED)
        except shm.ShmError as exc:
            return "cannot open the shared memory object: %s" % exc
        segment = shm.Segment(fd, msg.size, msg.token)
        payload: Any = segment
        if self.store.segments >= self.max_segments:
            payload = segment.detach()  # out of descriptors to spend: keep it as a mapping
        error = self.store.put(msg.object_id, msg.owner_id, payload) or ""
        if error:
            segment.close()
        else:
            self.shm_puts += 1
        return error

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
        self._shm_peers.pop(conn, None)
        if conn.peer_role == ROLE_CLIENT and conn.data is not None:
            self.store.delete_owner(conn.data)

    def close(self) -> None:
        self.listener.close()
        self.store.clear()
        if self.probe is not None:
            self.probe.close()


def _max_segments() -> int:
    """Descriptors this process may spend on objects: half of what it may open."""
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 256
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 4096
    return max(0, soft // 2)
