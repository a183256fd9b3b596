"""A framed, non-blocking, authenticated connection driven by an :class:`EventLoop`.

Reading: what the socket gives goes to a :class:`FrameReader` (``protocol/framing.py``),
which checks each frame length against the limit (4 KiB until the handshake is done) before
allocating; the rest of a big frame is received straight into the buffer it gives (one copy).
Writing: frames are queued as lists of buffers and sent with ``sendmsg`` when the loop
flushes, so big payloads are never concatenated and many small frames share a syscall.
"""

import collections
import logging
import os
import selectors
import socket
import threading
from typing import Any, Deque, List, Optional, Tuple

from ..protocol.codec import FRAME_HEADER, Buffer, _nbytes, Message, ProtocolError, decode, encode_parts
from ..protocol.framing import BIG_FRAME, FrameReader
from ..protocol.handshake import HANDSHAKE_FRAME_LIMIT, AcceptorHandshake, ConnectorHandshake
from .address import Address, connect_nonblocking, tune
from .loop import EventLoop

logger = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 ** 3  # 4 GiB; configurable per component
HANDSHAKE_TIMEOUT_SECONDS = 10.0
_READ_CHUNK = 256 * 1024
_READ_BUDGET = 8 * 1024 * 1024  # bytes read per readiness event, so one sender cannot hog the loop
_IOV_MAX = 512

_CONNECTING, _HANDSHAKE, _OPEN, _CLOSED = range(4)


class Handler:
    """What a connection reports to its owner."""

    def connection_open(self, conn: "Connection") -> None:
        pass

    def message_received(self, conn: "Connection", msg: Message) -> None:
        raise NotImplementedError

    def connection_closed(self, conn: "Connection", reason: str) -> None:
        pass


class Connection:
    """One peer. ``role`` is our role when dialling; ``allowed_roles`` is set when accepting."""

    def __init__(self, loop: EventLoop, sock: socket.socket, handler: Handler, *, peer: str,
                 auth_key: Optional[bytes] = None, role: int = 0, allowed_roles: Tuple[int, ...] = (),
                 connecting: bool = False, handshake: bool = True,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.loop = loop
        self.sock = sock
        self.handler = handler
        self.peer = peer
        self.max_frame_bytes = max_frame_bytes
        self.peer_role = role if not allowed_roles else 0
        self.data: Any = None  # owner's per-connection state
        self.opened = False
        self.failure: Optional[str] = None  # why the handshake failed (wrong key, version...), if it did
        self._before_open: List[Message] = []  # sent before the handshake completed
        self._reader = FrameReader(HANDSHAKE_FRAME_LIMIT if handshake else max_frame_bytes)
        self._accepting = bool(allowed_roles)
        self._wbuf: Deque[Buffer] = collections.deque()
        self.write_backlog = 0
        self._events = selectors.EVENT_READ
        self._close_when_flushed = False
        self._timeout = None
        self._handshake: Any = None
        if not handshake:
            self._state = _OPEN
        elif allowed_roles:
            self._handshake = AcceptorHandshake(auth_key, allowed_roles)
            self._state = _HANDSHAKE
        else:
            self._handshake = ConnectorHandshake(role, auth_key)
            self._state = _CONNECTING if connecting else _HANDSHAKE
        if self._state == _CONNECTING:
            self._events = selectors.EVENT_WRITE
        loop.add(sock, self._events, self._on_event)
        if self._handshake is not None:
            self._timeout = loop.call_later(HANDSHAKE_TIMEOUT_SECONDS, self._handshake_timed_out)
            if self._state == _HANDSHAKE:
                self._start_handshake()
        elif self._state == _OPEN:
            self.opened = True

    @classmethod
    def dial(cls, loop: EventLoop, address: Address, handler: Handler, role: int,
             auth_key: Optional[bytes], **kwargs: Any) -> "Connection":
        sock = connect_nonblocking(address)
        tune(sock)
        return cls(loop, sock, handler, peer=str(address), role=role, auth_key=auth_key, connecting=True, **kwargs)

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    # --- sending ---
    def send(self, msg: Message) -> None:
        """Queue ``msg``. Before the handshake completes it waits and goes right after it;
        on a closed connection it is dropped (the owner hears of the close anyway)."""
        if self._state == _OPEN:
            if not self._close_when_flushed:
                self._send_now(msg)
        elif self._state != _CLOSED and self.failure is None:
            self._before_open.append(msg)

    def _send_now(self, msg: Message) -> None:
        parts = encode_parts(msg)
        self._wbuf.extend(parts)
        for part in parts:
            self.write_backlog += _nbytes(part)
        self.loop.want_flush(self)

    def close_after_flush(self) -> None:
        self._close_when_flushed = True
        self.loop.want_flush(self)

    def flush(self) -> None:
        if self._state in (_CLOSED, _CONNECTING):
            return
        wbuf = self._wbuf
        sock = self.sock
        while wbuf:
            batch = [wbuf[i] for i in range(min(len(wbuf), _IOV_MAX))]
            try:
                sent = sock.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                self._set_events(selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
            except OSError as exc:
                self.close("send failed: %s" % exc)
                return
            self.write_backlog -= sent
            while wbuf and (sent or not _nbytes(wbuf[0])):  # empty buffers go too, or we spin
                head = wbuf[0]
                size = _nbytes(head)
                if size <= sent:
                    sent -= size
                    wbuf.popleft()
                else:
                    wbuf[0] = memoryview(head).cast("B")[sent:]
                    sent = 0
        self._set_events(selectors.EVENT_READ)
        if self._close_when_flushed:
            self.close("closed")

    def _set_events(self, events: int) -> None:
        if events != self._events and self._state != _CLOSED:
            self._events = events
            self.loop.modify(self.sock, events, self._on_event)

    # --- receiving ---
    def _on_event(self, mask: int) -> None:
        if self._state == _CONNECTING:
            error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.close("cannot connect to %s: %s" % (self.peer, _strerror(error)))
                return
            self._state = _HANDSHAKE
            self._set_events(selectors.EVENT_READ)
            self._start_handshake()
            return
        if mask & selectors.EVENT_READ:
            self._read()
        if mask & selectors.EVENT_WRITE and self._state != _CLOSED:
            self.flush()

    def _read(self) -> None:
        budget = _READ_BUDGET
        sock = self.sock
        reader = self._reader
        while budget > 0 and self._state != _CLOSED:
            try:
                big = reader.big_buffer()
                if big is not None:
                    n = sock.recv_into(big, min(len(big), budget))
                    big.release()
                    reader.big_received(n)
                else:
                    data = sock.recv(_READ_CHUNK)
                    n = len(data)
                    reader.feed(data)
                if n:
                    budget -= n
                    self._deliver_ready()
                    if big is None and n < _READ_CHUNK:
                        return
                    continue
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.close("receive failed: %s" % exc)
                return
            self.close("connection closed by %s" % self.peer)
            return

    def _deliver_ready(self) -> None:
        reader = self._reader
        while self._state != _CLOSED:
            try:
                frame = reader.next_frame()
                if frame is None:
                    return
                msg = decode(frame)
            except ProtocolError as exc:
                self.close("protocol error from %s: %s" % (self.peer, exc))
                return
            if self._state != _OPEN:
                self._handshake_step(msg)
                continue
            try:
                self.handler.message_received(self, msg)
            except Exception:
                logger.exception("error handling %s from %s", type(msg).__name__, self.peer)
                self.close("internal error handling %s" % type(msg).__name__)

    def _start_handshake(self) -> None:
        first = self._handshake.start()
        if first is not None:
            self._send_now(first)

    def _handshake_step(self, msg: Message) -> None:
        step = self._handshake.receive(msg)
        if step.reply is not None:
            self._send_now(step.reply)
        if step.failure is not None:
            if self._accepting:
                logger.warning("refused %s: %s", self.peer, step.failure)
            self._fail(step.failure)
        elif step.done:
            self.peer_role = self._handshake.role
            self._open()

    def _fail(self, reason: str) -> None:
        self._state = _HANDSHAKE  # still able to flush the Rejected frame
        self.failure = reason
        self.flush()
        self.close(reason)

    def _open(self) -> None:
        self._state = _OPEN
        self.opened = True
        self._reader.limit = self.max_frame_bytes
        if self._timeout is not None:
            self._timeout.cancel()
        self.handler.connection_open(self)
        waiting, self._before_open = self._before_open, []
        for msg in waiting:
            self.send(msg)

    def _handshake_timed_out(self) -> None:
        if self._state in (_CONNECTING, _HANDSHAKE):
            self.close("handshake with %s timed out" % self.peer)

    def close(self, reason: str = "closed") -> None:
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        if self._timeout is not None:
            self._timeout.cancel()
        self.loop.remove(self.sock)
        try:
            self.sock.close()
        except OSError:
            pass
        self._wbuf.clear()
        self._before_open = []
        self._reader.clear()
        self.handler.connection_closed(self, reason)


def _strerror(code: int) -> str:
    return os.strerror(code)


class Listener:
    """Accepts connections on a listening socket and wraps each in a :class:`Connection`."""

    def __init__(self, loop: EventLoop, sock: socket.socket, handler: Handler, *, address: str,
                 auth_key: Optional[bytes], allowed_roles: Tuple[int, ...],
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.loop = loop
        self.sock = sock
        self.address = address
        self.handler = handler
        self.auth_key = auth_key
        self.allowed_roles = allowed_roles
        self.max_frame_bytes = max_frame_bytes
        sock.setblocking(False)
        loop.add(sock, selectors.EVENT_READ, self._on_accept)

    def _on_accept(self, _mask: int) -> None:
        for _ in range(64):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("accept failed on %s: %s", self.address, exc)
                return
            sock.setblocking(False)
            tune(sock)
            peer = "%s:%s" % addr[:2] if isinstance(addr, tuple) else (addr or self.address)
            Connection(self.loop, sock, self.handler, peer=peer, auth_key=self.auth_key,
                       allowed_roles=self.allowed_roles, max_frame_bytes=self.max_frame_bytes)

    def close(self) -> None:
        self.loop.remove(self.sock)
        self.sock.close()


class BlockingChannel:
    """The same framing over a blocking socket, for the processor side of a socketpair."""

    def __init__(self, sock: socket.socket, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.sock = sock
        self._reader = FrameReader(max_frame_bytes)
        # A task's own threads may send (stream_output) while the processor sends a result:
        # a frame goes out whole or not at all.
        self._send_lock = threading.Lock()

    @property
    def max_frame_bytes(self) -> int:
        return self._reader.limit

    @max_frame_bytes.setter
    def max_frame_bytes(self, value: int) -> None:
        self._reader.limit = value

    def send(self, msg: Message) -> None:
        parts = encode_parts(msg)
        with self._send_lock:
            if len(parts) == 1:
                self.sock.sendall(parts[0])
            else:
                for part in parts:
                    self.sock.sendall(part)

    def send_many(self, msgs: List[Message]) -> None:
        """Send several messages with as few system calls as their sizes allow."""
        small: List[Buffer] = []
        with self._send_lock:
            for msg in msgs:
                for part in encode_parts(msg):
                    if _nbytes(part) < BIG_FRAME:
                        small.append(part)
                        continue
                    if small:
                        self.sock.sendall(b"".join(small))
                        small = []
                    self.sock.sendall(part)
            if small:
                self.sock.sendall(b"".join(small))

    def recv_ready(self) -> List[Message]:
        """The messages already complete in the socket buffer; never blocks.

        Stops at an incomplete big frame: ``recv()`` then receives the rest of it straight
        into its own buffer, blocking, rather than this loop polling for it.
        """
        reader = self._reader
        out: List[Message] = []
        while True:
            msg = reader.next_message()
            if msg is not None:
                out.append(msg)
                continue
            if reader.receiving_big:
                return out
            try:
                data = self.sock.recv(_READ_CHUNK, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return out
            if not data:
                return out  # end of stream: the next recv() raises EOFError
            reader.feed(data)

    def recv(self) -> Message:
        """Block for one message; raise EOFError when the peer is gone."""
        reader = self._reader
        while True:
            msg = reader.next_message()
            if msg is not None:
                return msg
            big = reader.big_buffer()
            if big is not None:
                n = self.sock.recv_into(big)
                big.release()
                reader.big_received(n)
            else:
                data = self.sock.recv(_READ_CHUNK)
                n = len(data)
                reader.feed(data)
            if not n:
                raise EOFError("channel closed")


__all__ = ["Connection", "Listener", "Handler", "BlockingChannel", "FRAME_HEADER"]
