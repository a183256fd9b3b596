"""A framed, non-blocking, authenticated connection driven by an :class:`EventLoop`.

Reading: what the socket gives goes to a :class:`FrameReader` (``protocol/framing.py``),
which checks each frame length against the limit (4 KiB until the handshake is done) before
allocating; the rest of a big frame is received straight into the buffer it gives (one copy).
Writing: frames are queued as lists of buffers and sent with ``sendmsg`` when the loop
flushes, so big payloads are never concatenated and many small frames share a syscall.

TLS (``tls=`` an ``ssl.SSLContext``; ``tls.py``) runs on the same non-blocking socket: it is
wrapped with ``do_handshake_on_connect=False`` once connected (the accepting side first
peeks at the first byte: a peer that does not open with a TLS ClientHello gets a plain
Rejected frame saying the address requires TLS, then is closed), and ``do_handshake`` is
retried on readiness until done; then the scaler handshake runs inside TLS. An
``SSLSocket`` has no ``sendmsg``: writes go out in chunks of up to ``_TLS_CHUNK`` bytes
(small frames joined, big payloads sliced), and a chunk refused with ``SSLWantWriteError``
is retried as is. Reads go on until ``SSLWantReadError``: bytes the SSL object has already
decrypted are invisible to ``select``, so a read that stops early for the budget with
``pending()`` bytes left comes back on the next loop iteration by itself.
"""

import collections
import errno
import logging
import os
import select
import selectors
import socket
import sys
import threading
import time
import weakref
from typing import Any, Deque, FrozenSet, List, Optional, Tuple

from ..protocol.codec import (BATCH_MAX_MESSAGES, BATCH_TYPE, FRAME_HEADER, Buffer, _nbytes, Message, ProtocolError,
                              batch_size, decode, decode_batch, encode, encode_batch, encode_parts)
from ..protocol.framing import BIG_FRAME, FrameReader
from ..protocol.handshake import HANDSHAKE_FRAME_LIMIT, AcceptorHandshake, ConnectorHandshake
from ..protocol.messages import Rejected
from .address import Address, connect_nonblocking, tune
from .loop import EventLoop

logger = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 ** 3  # 4 GiB; configurable per component
HANDSHAKE_TIMEOUT_SECONDS = 10.0
# A frame that has started must keep coming: no byte of it for this long closes the peer
# (a big announced frame's buffer is not held for a peer that went quiet).
FRAME_STALL_SECONDS = 30.0
# Past WRITE_HIGH_WATER bytes waiting to be sent to a peer that dialled us, we stop reading
# from it until they drain below WRITE_LOW_WATER: a peer that sends requests and never reads
# the replies stalls itself instead of growing our memory.
WRITE_HIGH_WATER = 16 * 1024 * 1024
# A batch (see Connection._send_now) is closed at this many messages or about this many bytes:
# it stays well under the receiver's big-frame size, and the write accounting sees it soon.
BATCH_MESSAGES = BATCH_MAX_MESSAGES
BATCH_BYTES = 256 * 1024
WRITE_LOW_WATER = 4 * 1024 * 1024
# What one queued buffer costs beyond its bytes (the bytes object and its deque slot): a
# flood of tiny replies must count for the memory it really takes.
_PART_OVERHEAD = 64
_READ_CHUNK = 256 * 1024  # what one receive asks for, into a reused buffer (read_buffer)
_READ_BUDGET = 8 * 1024 * 1024  # bytes read per readiness event, so one sender cannot hog the loop
_IOV_MAX = 512

_TLS_CHUNK = 256 * 1024  # plaintext bytes handed to one SSL write (16 TLS records)
_TLS_READ_CHUNK = 64 * 1024  # one TLS record holds at most 16 KiB of plaintext

_CONNECTING, _TLS_SNIFF, _TLS_HANDSHAKE, _HANDSHAKE, _OPEN, _CLOSED = range(6)
_STARTING = (_CONNECTING, _TLS_SNIFF, _TLS_HANDSHAKE, _HANDSHAKE)


def read_buffer(loop: EventLoop) -> memoryview:
    """The loop's receive buffer, shared by its connections (one thread reads them all).

    ``sock.recv(n)`` allocates ``n`` bytes and shrinks them to what came: for 256 KiB that
    is an mmap, an mremap and an munmap per receive, which cost a small message's hop more
    than its parsing did. A reused buffer and one copy into the frame reader cost neither.
    """
    buf = loop.read_buffer
    if buf is None:
        buf = loop.read_buffer = memoryview(bytearray(_READ_CHUNK))
    return buf


class _Never(Exception):
    """Stands in for the ssl exceptions until TLS is first used (``ssl`` is imported lazily)."""


_SSLWantRead: Any = _Never
_SSLWantWrite: Any = _Never
_SSLClosed: Any = _Never  # SSLZeroReturnError, SSLEOFError: the peer closed


def _load_ssl() -> None:
    global _SSLWantRead, _SSLWantWrite, _SSLClosed
    import ssl
    _SSLWantRead, _SSLWantWrite = ssl.SSLWantReadError, ssl.SSLWantWriteError
    _SSLClosed = (ssl.SSLZeroReturnError, ssl.SSLEOFError)


class Handler:
    """What a connection reports to its owner."""

    def connection_open(self, conn: "Connection") -> None:
        pass

    def message_received(self, conn: "Connection", msg: Message) -> None:
        raise NotImplementedError

    # Messages of these types that arrive back to back (in one batch frame, or in frames read
    # at once) go to batch_received as one list, in order: what a handler pays per event is
    # then paid per read. The busier the handler, the more each read brings.
    batch_types: FrozenSet[type] = frozenset()

    def batch_received(self, conn: "Connection", msgs: List[Message]) -> None:
        for msg in msgs:
            if conn.closed:
                return
            self.message_received(conn, msg)

    def connection_closed(self, conn: "Connection", reason: str) -> None:
        pass


class Connection:
    """One peer. ``role`` is our role when dialling; ``allowed_roles`` is set when accepting.

    ``tls``: an ``ssl.SSLContext`` (``tls.server_context`` when accepting, else
    ``tls.client_context``, with ``server_hostname`` the name the certificate must list).
    """

    def __init__(self, loop: EventLoop, sock: socket.socket, handler: Handler, *, peer: str,
                 auth_key: Optional[bytes] = None, role: int = 0, allowed_roles: Tuple[int, ...] = (),
                 connecting: bool = False, handshake: bool = True,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, max_write_backlog: int = 0, tls: Any = None,
                 server_hostname: Optional[str] = None) -> None:
        self.loop = loop
        self.sock = sock
        self.handler = handler
        self._batch_types: FrozenSet[type] = getattr(handler, "batch_types", frozenset())
        self.peer = peer
        self.max_frame_bytes = max_frame_bytes
        self.peer_role = role if not allowed_roles else 0
        self.data: Any = None  # owner's per-connection state
        self.opened = False
        self.failure: Optional[str] = None  # why the handshake failed (wrong key, version...), if it did
        self.tls = tls is not None
        self.tls_failure = False  # the failure is about TLS (certificate, or TLS on one side only)
        self._tls_context = tls
        self._server_hostname = server_hostname
        self._tls_chunk: Optional[Buffer] = None  # a chunk an SSL write refused: retried as is
        self._read_wants_write = False  # an SSL read waits for the socket to be writable
        self._write_wants_read = False  # an SSL write waits for the socket to be readable
        self._resume_scheduled = False
        self._before_open: List[Message] = []  # sent before the handshake completed
        self._reader = FrameReader(HANDSHAKE_FRAME_LIMIT if handshake else max_frame_bytes)
        self._accepting = bool(allowed_roles)
        self._wbuf: Deque[Buffer] = collections.deque()
        self.write_backlog = 0
        # Small messages of one batchable type sent in a row wait here, not encoded, until the
        # flush (or a message of another kind, or the batch's caps) makes one batch frame of
        # them (codec.encode_batch): per message, the codec's work alone is about half of what
        # separate frames cost, and the per-frame work is paid once. A subclass whose frames
        # carry descriptors turns this off.
        self.batching = True
        self._batch: Optional[List[Message]] = None
        self._batch_bytes = 0
        # Set (to a threading.RLock) when another thread may write to this connection
        # directly (send_from_thread): the loop's writes and closing then take it too.
        self.write_lock: Any = None
        self._flushing_locked = False
        # > 0: a peer with more than this waiting to be sent (it stopped reading while we keep
        # producing for it, e.g. results) is dropped. 0: no cap (replies are bounded by the
        # read pause above WRITE_HIGH_WATER).
        self.max_write_backlog = max_write_backlog
        self._read_paused = False
        self._last_read = 0.0  # when bytes last arrived: the partial-frame watch reads it
        self._stall_timer: Any = None
        self._events = selectors.EVENT_READ
        self._close_when_flushed = ""  # the reason to close once the queue is written; "": none
        self._timeout = None
        self._handshake: Any = None
        if tls is not None:
            _load_ssl()
            if not handshake:
                raise ValueError("TLS needs the handshake")
        if not handshake:
            self._state = _OPEN
        elif allowed_roles:
            self._handshake = AcceptorHandshake(auth_key, allowed_roles)
            self._state = _TLS_SNIFF if tls is not None else _HANDSHAKE
        else:
            self._handshake = ConnectorHandshake(role, auth_key)
            self._state = _CONNECTING if connecting else (_TLS_HANDSHAKE if tls is not None else _HANDSHAKE)
        if self._state == _CONNECTING:
            self._events = selectors.EVENT_WRITE
        if self._state == _TLS_HANDSHAKE:  # an already connected socket: wrap it now
            self._state = _CONNECTING
            self._timeout = loop.call_later(HANDSHAKE_TIMEOUT_SECONDS, self._handshake_timed_out)
            self._start_tls()
            return
        loop.add(sock, self._events, self._on_event)
        if self._handshake is not None:
            self._timeout = loop.call_later(HANDSHAKE_TIMEOUT_SECONDS, self._handshake_timed_out)
            if self._state == _HANDSHAKE:
                self._start_handshake()
        elif self._state == _OPEN:
            self.opened = True

    @classmethod
    def dial(cls, loop: EventLoop, address: Address, handler: Handler, role: int,
             auth_key: Optional[bytes], tls_ca: Optional[str] = None, **kwargs: Any) -> "Connection":
        """Connect to ``address``; a ``tls://`` one is verified against ``tls_ca`` (a CA file)
        or, without it, the system store (``tls.client_context``)."""
        if address.is_tls and kwargs.get("tls") is None:
            from .tls import client_context
            kwargs["tls"] = client_context(tls_ca)
            kwargs.setdefault("server_hostname", address.host)
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
        size = batch_size(msg) if self.batching else 0
        batch = self._batch
        if size:
            if batch is not None and type(batch[0]) is type(msg):
                batch.append(msg)
                self._batch_bytes += size
                if self._batch_bytes >= BATCH_BYTES or len(batch) >= BATCH_MESSAGES:
                    self._close_batch()
            else:
                if batch is not None:
                    self._close_batch()
                    if self._close_when_flushed:
                        return  # it could not be encoded: the connection closes, nothing more goes
                self._batch = [msg]
                self._batch_bytes = size
                self.loop.want_flush(self)
            return
        if batch is not None:
            self._close_batch()  # what was sent before goes first
            if self._close_when_flushed:
                return
        self._queue(encode_parts(msg))

    def _close_batch(self, flushing: bool = False) -> None:
        """Encode the waiting batch into the write queue (one message: an ordinary frame).

        The batch stays visible until its frame is queued: another thread's
        ``send_from_thread`` must see something ahead of it all along. ``flushing``: called
        by the flush that writes it (see _queue)."""
        batch = self._batch
        try:
            if batch:
                try:
                    parts = encode_parts(batch[0]) if len(batch) == 1 else encode_batch(batch)
                except (ProtocolError, ValueError, TypeError):  # (a str that is not UTF-8 is a ValueError)
                    self._encode_one_by_one(batch, flushing)
                    return
                self._queue(parts, flushing)
        finally:
            self._batch = None

    def _encode_one_by_one(self, batch: List[Message], flushing: bool) -> None:
        """A batch with a message that cannot be encoded (a field out of its range: a bug, as
        inputs are checked before they become messages). It was sent long before this flush,
        so there is no caller to raise to, and losing it silently would lose tasks or results:
        the messages ahead of the bad one go, then the connection closes saying why (its owner
        handles that as the peer leaving: re-queues, fails waiters)."""
        for msg in batch:
            try:
                parts = encode_parts(msg)
            except (ProtocolError, ValueError, TypeError) as exc:
                reason = "internal error: %s" % (exc if isinstance(exc, ProtocolError)
                                                 else "cannot encode %s: %s" % (type(msg).__name__, exc))
                logger.error("%s: closing the connection to %s", reason, self.peer)
                self._close_when_flushed = reason  # nothing more is queued; the flush writes the rest, then closes
                self.loop.want_flush(self)
                return
            self._queue(parts, flushing)

    def _queue(self, parts: List[Buffer], flushing: bool = False) -> None:
        """Append ``parts`` to the write queue and ask the loop for a flush, unless this is
        the flush (it writes them next, or asks for writability): one more request cost
        every wake-up an extra loop iteration and an ``epoll_wait`` that found nothing."""
        self._wbuf.extend(parts)
        for part in parts:
            self.write_backlog += _nbytes(part)
        held = self.write_backlog + _PART_OVERHEAD * len(self._wbuf)
        if held > WRITE_HIGH_WATER:
            if 0 < self.max_write_backlog < held:
                logger.warning("dropping %s: it stopped reading (%d MiB waiting to be sent to it)",
                               self.peer, held >> 20)
                # Closed from the loop, not here: the sender may be in the middle of updating
                # the state the close handler changes. Meanwhile nothing more is queued.
                reason = "stopped reading: %d MiB waiting to be sent" % (held >> 20)
                self._close_when_flushed = reason  # (a flush under way closes with it)
                self._wbuf.clear()
                self._batch = None
                self.write_backlog = 0
                self.loop.call_soon(lambda: self.close(reason))
                return
            # Only the accepting side pauses: if both ends of a connection could, each could
            # wait for the other to read (a client submitting a big batch while results pour in).
            if not self._read_paused and self._accepting:
                self._read_paused = True  # until it drains below WRITE_LOW_WATER (see flush)
                self._set_events(selectors.EVENT_WRITE)
        if not flushing:
            self.loop.want_flush(self)

    def close_after_flush(self) -> None:
        self._close_when_flushed = "closed"
        self.loop.want_flush(self)

    def flush(self) -> None:
        lock = self.write_lock
        if lock is None:
            self._flush()
        else:
            with lock:
                self._flushing_locked = True
                try:
                    self._flush()
                finally:
                    self._flushing_locked = False

    def send_from_thread(self, parts: List[Buffer]) -> bool:
        """Write ``parts`` (whole encoded frames) now, from a thread other than the loop's.

        Only when the connection is open, plain (not TLS) and has nothing queued ahead of
        them; returns False, having written nothing, otherwise (queue them through the loop
        instead). The caller holds ``write_lock``. Saves a wake-up of the loop's thread for
        a message that could leave at once (a client's single ``submit``).
        """
        if (self._state != _OPEN or self.tls or self._wbuf or self._batch or self._close_when_flushed
                or self._read_paused or len(parts) > _IOV_MAX):
            return False
        try:
            sent = self.sock.sendmsg(parts)
        except OSError:  # would block, or failed: the loop finds out and closes
            return False
        rest: List[Buffer] = []
        for part in parts:
            size = _nbytes(part)
            if sent >= size:
                sent -= size
                continue
            rest.append(memoryview(part).cast("B")[sent:] if sent else part)
            sent = 0
        if rest:  # the kernel took part of it: the loop writes the rest, before anything else
            self._wbuf.extendleft(reversed(rest))
            waiting = sum(_nbytes(part) for part in rest)
            self.loop.call_soon_threadsafe(lambda: self._queued_by_thread(waiting))
        return True

    def send_holding_loop_lock(self, parts: List[Buffer]) -> bool:
        """Write ``parts`` (whole encoded frames) now, from a thread other than the loop's
        that holds the loop's lock (``EventLoop.lock``), which the loop's thread holds for
        everything but its wait in ``select()``: so this runs the loop's own write path, TLS
        included (the SSL object is only ever used under that lock). Only when the connection
        is open and no batch is being gathered; returns False, having done nothing,
        otherwise. The frames go behind whatever is queued. What the socket does not take
        now, and a close after a failed write (which ``flush`` leaves to the loop's thread,
        see ``close``), are the loop's: its thread is woken for them."""
        if self._state != _OPEN or self._batch or self._close_when_flushed or self._read_paused:
            return False
        self._wbuf.extend(parts)
        self.write_backlog += sum(_nbytes(part) for part in parts)
        self.flush()
        if self._wbuf or self._tls_chunk is not None or self.loop._soon:
            self.loop.call_soon_threadsafe(_nothing)
        return True

    def _queued_by_thread(self, nbytes: int) -> None:
        self.write_backlog += nbytes
        self.loop.want_flush(self)

    def _flush(self) -> None:
        if self._state in (_CLOSED, _CONNECTING, _TLS_SNIFF, _TLS_HANDSHAKE):
            return
        if self._batch is not None:
            self._close_batch(flushing=True)
        if self.tls:
            self._flush_tls()
            return
        wbuf = self._wbuf
        sock = self.sock
        while wbuf:
            batch = [wbuf[i] for i in range(min(len(wbuf), _IOV_MAX))]
            try:
                sent = sock.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                self._set_events(selectors.EVENT_WRITE if self._read_paused
                                 else selectors.EVENT_READ | selectors.EVENT_WRITE)
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
            if self._read_paused and self.write_backlog + _PART_OVERHEAD * len(wbuf) < WRITE_LOW_WATER:
                self._read_paused = False
                self._set_events(selectors.EVENT_READ | selectors.EVENT_WRITE)
        self._set_events(selectors.EVENT_READ)
        if self._close_when_flushed:
            self.close(self._close_when_flushed)

    def _flush_tls(self) -> None:
        wbuf = self._wbuf
        sock = self.sock
        self._write_wants_read = False
        while True:
            chunk = self._tls_chunk
            if chunk is None:
                if not wbuf:
                    break
                chunk = self._tls_chunk = _next_chunk(wbuf)
            try:
                sent = sock.send(chunk)
            except (_SSLWantWrite, BlockingIOError, InterruptedError):
                self._set_events(selectors.EVENT_WRITE if self._read_paused
                                 else selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
            except _SSLWantRead:
                self._write_wants_read = True
                self._set_events(selectors.EVENT_READ)
                return
            except OSError as exc:
                self.close("send failed: %s" % exc)
                return
            self.write_backlog -= sent
            size = _nbytes(chunk)
            self._tls_chunk = None if sent >= size else memoryview(chunk).cast("B")[sent:]
            if self._read_paused and self.write_backlog + _PART_OVERHEAD * len(wbuf) < WRITE_LOW_WATER:
                self._read_paused = False
                self._set_events(selectors.EVENT_READ | selectors.EVENT_WRITE)
                if not self._resume_scheduled:  # decrypted bytes may wait in the SSL object
                    self._resume_scheduled = True
                    self.loop.call_later(0, self._resume_read)
        self._set_events(selectors.EVENT_READ)
        if self._close_when_flushed:
            self.close(self._close_when_flushed)

    def _set_events(self, events: int) -> None:
        if events != self._events and self._state != _CLOSED:
            self._events = events
            self.loop.modify(self.sock, events, self._on_event)

    # --- receiving ---
    def _on_event(self, mask: int) -> None:
        state = self._state
        if state == _CONNECTING:
            error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.close("cannot connect to %s: %s" % (self.peer, _strerror(error)))
                return
            if self.tls:
                self._start_tls()
                return
            self._state = _HANDSHAKE
            self._set_events(selectors.EVENT_READ)
            self._start_handshake()
            return
        if state == _TLS_SNIFF:
            self._sniff()
            return
        if state == _TLS_HANDSHAKE:
            self._tls_step()
            return
        if self.tls:
            if mask & selectors.EVENT_READ or (self._read_wants_write and mask & selectors.EVENT_WRITE):
                self._read_tls()
            if self._state != _CLOSED and (mask & selectors.EVENT_WRITE or (
                    self._write_wants_read and mask & selectors.EVENT_READ)):
                self.flush()
            return
        if mask & selectors.EVENT_READ:
            self._read()
        if mask & selectors.EVENT_WRITE and self._state != _CLOSED:
            self.flush()

    # --- TLS ---
    def _sniff(self) -> None:
        """Accepting on a TLS address: a TLS ClientHello starts with 0x16; anything else is told
        that this address requires TLS (a plain Rejected frame) and closed."""
        from .tls import REQUIRES_TLS, TLS_RECORD_HANDSHAKE

        sock = self.sock
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close("receive failed: %s" % exc)
            return
        if not first:
            self.close("connection closed by %s" % self.peer)
            return
        if first[0] == TLS_RECORD_HANDSHAKE:
            self._start_tls()
            return
        try:  # read what it sent, so that closing does not reset the connection before it reads the answer
            sock.recv(HANDSHAKE_FRAME_LIMIT)
            sock.send(encode(Rejected(REQUIRES_TLS)))
        except OSError:
            pass
        logger.warning("refused %s: not a TLS connection, on a TLS address", self.peer)
        self.failure = REQUIRES_TLS
        self.tls_failure = True
        self.close(REQUIRES_TLS)

    def _start_tls(self) -> None:
        """Wrap the connected socket (the wrapper takes over its descriptor) and start the TLS handshake."""
        raw = self.sock
        self.loop.remove(raw)
        try:
            self.sock = self._tls_context.wrap_socket(raw, server_side=self._accepting, do_handshake_on_connect=False,
                                                      server_hostname=None if self._accepting
                                                      else self._server_hostname)
        except (OSError, ValueError) as exc:
            self._state = _HANDSHAKE
            self._tls_failed(exc)
            return
        self._state = _TLS_HANDSHAKE
        self._events = selectors.EVENT_READ | selectors.EVENT_WRITE
        self.loop.add(self.sock, self._events, self._on_event)
        self._tls_step()

    def _tls_step(self) -> None:
        try:
            self.sock.do_handshake()
        except _SSLWantRead:
            self._set_events(selectors.EVENT_READ)
            return
        except _SSLWantWrite:
            self._set_events(selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        except (OSError, ValueError) as exc:
            self._tls_failed(exc)
            return
        self._state = _HANDSHAKE
        self._set_events(selectors.EVENT_READ)
        self._start_handshake()
        self._read_tls()  # the peer's first frames may already sit decrypted in the SSL object

    def _tls_failed(self, exc: BaseException) -> None:
        from .tls import handshake_failure

        reason = handshake_failure(exc, self.peer, self._accepting)
        if self._accepting:
            logger.warning("refused %s: %s", self.peer, reason)
        self.failure = reason
        self.tls_failure = True
        self.close(reason)

    def _resume_read(self) -> None:
        self._resume_scheduled = False
        if self._state in (_HANDSHAKE, _OPEN):
            self._read_tls()

    def _read_tls(self) -> None:
        budget = _READ_BUDGET
        sock = self.sock
        reader = self._reader
        self._read_wants_write = False
        while budget > 0 and self._state != _CLOSED and not self._read_paused:
            try:
                big = reader.big_buffer()
                if big is not None:
                    try:
                        n = sock.recv_into(big, min(len(big), budget))
                    finally:
                        big.release()
                    reader.big_received(n)
                else:
                    scratch = read_buffer(self.loop)
                    n = sock.recv_into(scratch, _TLS_READ_CHUNK)
                    reader.feed(scratch[:n])
            except _SSLWantRead:
                return
            except _SSLWantWrite:
                self._read_wants_write = True
                self._set_events(selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
            except _SSLClosed:
                n = 0
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.close("receive failed: %s" % exc)
                return
            if not n:
                self.close("connection closed by %s" % self.peer)
                return
            budget -= n
            self._last_read = time.monotonic()
            self._deliver_ready()
            if self._stall_timer is None and reader.partial and self._state != _CLOSED:
                self._stall_timer = self.loop.call_later(FRAME_STALL_SECONDS, self._check_stall)
        if (self._state != _CLOSED and not self._resume_scheduled and not self._read_paused
                and sock.pending()):
            # Decrypted bytes left in the SSL object: select() will not report them.
            self._resume_scheduled = True
            self.loop.call_later(0, self._resume_read)

    def _read(self) -> None:
        if self.tls:
            self._read_tls()
            return
        budget = _READ_BUDGET
        sock = self.sock
        reader = self._reader
        while budget > 0 and self._state != _CLOSED and not self._read_paused:
            try:
                big = reader.big_buffer()
                if big is not None:
                    n = sock.recv_into(big, min(len(big), budget))
                    big.release()
                    reader.big_received(n)
                else:
                    scratch = read_buffer(self.loop)
                    n = sock.recv_into(scratch)
                    reader.feed(scratch[:n])
                if n:
                    budget -= n
                    self._last_read = time.monotonic()
                    self._deliver_ready()
                    if self._stall_timer is None and reader.partial and self._state != _CLOSED:
                        self._stall_timer = self.loop.call_later(FRAME_STALL_SECONDS, self._check_stall)
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
        batch_types = self._batch_types
        run: List[Message] = []  # messages of one of batch_types, back to back, not delivered yet
        while self._state != _CLOSED:
            try:
                frame = reader.next_frame()
                if frame is None:
                    break
                if frame[0] == BATCH_TYPE:
                    if self._state != _OPEN:
                        raise ProtocolError("a batch frame before the handshake completed")
                    msgs = decode_batch(frame)
                    if run and type(run[0]) is not type(msgs[0]):
                        self._deliver_run(run)
                        run = []
                    if type(msgs[0]) in batch_types:
                        run.extend(msgs)
                    elif self._state != _CLOSED:
                        self._deliver_batch(msgs)
                    continue
                msg = decode(frame)
            except ProtocolError as exc:
                if run:  # what came before the bad frame is delivered first, as it would be unheld
                    self._deliver_run(run)
                    if self._state == _CLOSED:
                        return
                self.close("protocol error from %s: %s" % (self.peer, exc))
                return
            if self._state != _OPEN:
                self._handshake_step(msg)
                continue
            kind = type(msg)
            if kind in batch_types:
                if run and type(run[0]) is not kind:
                    self._deliver_run(run)
                    run = []
                run.append(msg)
                continue
            if run:
                self._deliver_run(run)
                run = []
                if self._state == _CLOSED:
                    return
            try:
                self.handler.message_received(self, msg)
            except Exception:
                logger.exception("error handling %s from %s", type(msg).__name__, self.peer)
                self.close("internal error handling %s" % type(msg).__name__)
        if run and self._state != _CLOSED:
            self._deliver_run(run)

    def _deliver_run(self, msgs: List[Message]) -> None:
        try:
            if len(msgs) == 1:
                self.handler.message_received(self, msgs[0])
            else:
                self.handler.batch_received(self, msgs)
        except Exception:
            logger.exception("error handling %s from %s", type(msgs[0]).__name__, self.peer)
            self.close("internal error handling %s" % type(msgs[0]).__name__)

    def _deliver_batch(self, msgs: List[Message]) -> None:
        handler = self.handler
        for msg in msgs:
            if self._state == _CLOSED:
                return
            try:
                handler.message_received(self, msg)
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
            elif isinstance(msg, Rejected) and msg.reason.startswith("this address requires TLS"):
                self.tls_failure = True
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

    def _check_stall(self) -> None:
        self._stall_timer = None
        if self._state == _CLOSED or not self._reader.partial:
            return
        now = time.monotonic()
        if self._read_paused:  # we stopped reading, not the peer
            self._last_read = now
        quiet = now - self._last_read
        if quiet >= FRAME_STALL_SECONDS:
            logger.warning("closing %s: a frame it started sending made no progress for %.0f s",
                           self.peer, quiet)
            self.close("a partial frame stalled for %.0f s" % quiet)
            return
        self._stall_timer = self.loop.call_later(FRAME_STALL_SECONDS - quiet, self._check_stall)

    def _handshake_timed_out(self) -> None:
        if self._state in _STARTING:
            self.close("handshake with %s timed out" % self.peer)

    def close(self, reason: str = "closed") -> None:
        if self._state == _CLOSED:
            return
        if self._flushing_locked:
            # A write failed under write_lock: close right after, not while other threads
            # wait on the lock (the owner's close handler may run callbacks that want theirs).
            self.loop.call_soon(lambda: self.close(reason))
            return
        self._state = _CLOSED
        if self._timeout is not None:
            self._timeout.cancel()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self.loop.remove(self.sock)
        lock = self.write_lock
        if lock is not None:
            lock.acquire()  # not while another thread writes (its descriptor must not be reused under it)
        try:
            self.sock.close()
        except OSError:
            pass
        finally:
            if lock is not None:
                lock.release()
        self._wbuf.clear()
        self._batch = None
        self._tls_chunk = None
        self._before_open = []
        self._reader.clear()
        self.handler.connection_closed(self, reason)


def _nothing() -> None:
    pass


def _strerror(code: int) -> str:
    return os.strerror(code)


def _next_chunk(wbuf: Deque[Buffer]) -> Buffer:
    """Take up to ``_TLS_CHUNK`` bytes off the front of ``wbuf``: small buffers joined, a big one sliced."""
    head = wbuf[0]
    size = _nbytes(head)
    if size >= _TLS_CHUNK:
        view = memoryview(head).cast("B")
        if size == _TLS_CHUNK:
            wbuf.popleft()
            return view
        wbuf[0] = view[_TLS_CHUNK:]
        return view[:_TLS_CHUNK]
    parts = [wbuf.popleft()]
    total = size
    while wbuf:
        size = _nbytes(wbuf[0])
        if total + size > _TLS_CHUNK:
            break
        parts.append(wbuf.popleft())
        total += size
    return parts[0] if len(parts) == 1 else b"".join(parts)


_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_ACCEPT_PAUSES = (0.05, 0.1, 0.2, 0.5, 1.0)  # back-off while the process is out of descriptors
_LOG_INTERVAL_SECONDS = 10.0


class Listener:
    """Accepts connections on a listening socket and wraps each in a :class:`Connection`.

    Out of file descriptors (``EMFILE``), it does not spin: it closes the oldest peer that
    has not proven itself yet (still in its handshake, or — with ``evict_unregistered`` —
    authenticated but not registered, ``conn.data`` still None) to make room for the
    newcomer; failing that it uses a reserved descriptor to accept and at once close one
    waiting connection (its peer gets an immediate close, not a timeout), pauses accepting
    with a growing back-off, and logs once per interval.
    """

    def __init__(self, loop: EventLoop, sock: socket.socket, handler: Handler, *, address: str,
                 auth_key: Optional[bytes], allowed_roles: Tuple[int, ...],
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, evict_unregistered: bool = False,
                 tls: Any = None) -> None:
        self.loop = loop
        self.tls = tls  # an ssl.SSLContext (tls.server_context) for a tls:// address
        self.sock = sock
        self.address = address
        self.handler = handler
        self.auth_key = auth_key
        self.allowed_roles = allowed_roles
        self.max_frame_bytes = max_frame_bytes
        self.evict_unregistered = evict_unregistered
        self._recent: Deque["weakref.ReferenceType[Connection]"] = collections.deque()  # oldest first
        self._reserve: Optional[int] = _open_reserve()
        self._pause = 0
        self._paused = False
        self._logged_at = -_LOG_INTERVAL_SECONDS
        self._refused = 0
        sock.setblocking(False)
        loop.add(sock, selectors.EVENT_READ, self._on_accept)

    def _on_accept(self, _mask: int) -> None:
        for _ in range(64):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    if self._evict_one():
                        continue  # room made: accept the newcomer now
                    self._out_of_descriptors(exc)
                else:
                    self._log("accept failed on %s: %s" % (self.address, exc))
                return
            self._pause = 0
            sock.setblocking(False)
            tune(sock)
            peer = "%s:%s" % addr[:2] if isinstance(addr, tuple) else (addr or self.address)
            conn = Connection(self.loop, sock, self.handler, peer=peer, auth_key=self.auth_key,
                              allowed_roles=self.allowed_roles, max_frame_bytes=self.max_frame_bytes,
                              tls=self.tls)
            self._recent.append(weakref.ref(conn))
            if len(self._recent) > 4096:
                self._prune()

    def _unproven(self, conn: Optional[Connection]) -> bool:
        if conn is None or conn.closed:
            return False
        return not conn.opened or (self.evict_unregistered and conn.data is None)

    def _prune(self) -> None:
        self._recent = collections.deque(ref for ref in self._recent if self._unproven(ref()))

    def _evict_one(self) -> bool:
        while self._recent:
            conn = self._recent.popleft()()
            if self._unproven(conn):
                assert conn is not None
                self._log("out of file descriptors on %s: closed %s, which had not %s, to let a new peer in"
                          % (self.address, conn.peer, "authenticated" if not conn.opened else "registered"))
                conn.close("closed to make room (out of file descriptors)")
                return True
        return False

    def _out_of_descriptors(self, exc: OSError) -> None:
        self._refused += 1
        if self._reserve is not None:  # turn one waiting peer away at once instead of leaving it hanging
            os.close(self._reserve)
            self._reserve = None
            try:
                turned_away, _ = self.sock.accept()
                turned_away.close()
            except OSError:
                pass
            self._reserve = _open_reserve()
        self._log("out of file descriptors on %s (%s): pausing new connections; %d turned away so far"
                  % (self.address, exc.strerror or exc, self._refused))
        delay = _ACCEPT_PAUSES[min(self._pause, len(_ACCEPT_PAUSES) - 1)]
        self._pause += 1
        if not self._paused:
            self._paused = True
            self.loop.remove(self.sock)
            self.loop.call_later(delay, self._resume)

    def _resume(self) -> None:
        if self._paused and self.sock.fileno() >= 0:
            self._paused = False
            self.loop.add(self.sock, selectors.EVENT_READ, self._on_accept)

    def _log(self, text: str) -> None:
        now = time.monotonic()
        if now - self._logged_at >= _LOG_INTERVAL_SECONDS:
            self._logged_at = now
            logger.warning("%s", text)

    def close(self) -> None:
        if not self._paused:
            self.loop.remove(self.sock)
        self._paused = False
        self.sock.close()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None


def _open_reserve() -> Optional[int]:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None


class BlockingChannel:
    """The same framing over a blocking socket, for the processor: its socketpair with its agent,
    and its connection to the scheduler (``reader``: the one its handshake was read with)."""

    def __init__(self, sock: socket.socket, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 reader: Optional[FrameReader] = None) -> None:
        self.sock = sock
        self._reader = reader if reader is not None else FrameReader(max_frame_bytes)
        self._reader.limit = max_frame_bytes
        # A task's own threads may send (stream_output) while the processor sends a result:
        # a frame goes out whole or not at all.
        self._send_lock = threading.Lock()
        self._scratch: Optional[memoryview] = None  # the receive buffer (see read_buffer)
        # recv_ready asks this first whether anything came: poll(0) costs a quarter of a
        # non-blocking receive that finds nothing (which raises), and the processor asks
        # before each task it holds.
        self._poller: Any = None
        if hasattr(select, "poll"):
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)

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
                self._sendall(parts[0])
            else:
                for part in parts:
                    self._sendall(part)

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
                        self._sendall(b"".join(small))
                        small = []
                    self._sendall(part)
            if small:
                self._sendall(b"".join(small))

    def recv_ready(self, poll: bool = True, readable: bool = False) -> List[Message]:
        """The messages already complete in the socket buffer; never blocks.

        Stops at an incomplete big frame: ``recv()`` then receives the rest of it straight
        into its own buffer, blocking, rather than this loop polling for it. Without
        ``poll``, only what an earlier receive already brought (no system call); with
        ``readable``, the caller's own poll found the socket readable (no poll here first).
        """
        reader = self._reader
        out: List[Message] = []
        while True:
            msg = reader.next_message()
            if msg is not None:
                out.append(msg)
                continue
            if reader.receiving_big or not poll:
                return out
            if readable:
                readable = False
            elif self._poller is not None and not self.buffered() and not self._poller.poll(0):
                return out
            try:
                data = self._recv_some(socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return out
            if not data:
                return out  # end of stream: the next recv() raises EOFError
            reader.feed(data)
            if len(data) < _READ_CHUNK:
                poll = False  # it took all there was: decode it, without asking the socket again

    def recv(self) -> Message:
        """Block for one message; raise EOFError when the peer is gone."""
        reader = self._reader
        while True:
            msg = reader.next_message()
            if msg is not None:
                return msg
            big = reader.big_buffer()
            if big is not None:
                n = self._recv_into(big)
                big.release()
                reader.big_received(n)
            else:
                if self._poller is not None and not self.buffered():
                    # Wait in poll(), not in recv(): a reader blocked in a unix socket's recv()
                    # is also woken each time the peer reads what we sent (the kernel's
                    # "room to write again" wake-up is not filtered for it), which for the
                    # processor meant a second wake-up per task, preempting its agent on the
                    # way to the scheduler; poll() is woken for incoming data only.
                    self._poller.poll()
                data = self._recv_some()
                n = len(data)
                reader.feed(data)
            if not n:
                raise EOFError("channel closed")

    def buffered(self) -> bool:
        """Bytes received already, where ``poll`` does not see them (a TLS record decrypted ahead)."""
        return False

    def _buffer(self) -> memoryview:
        buf = self._scratch
        if buf is None:
            buf = self._scratch = memoryview(bytearray(_READ_CHUNK))
        return buf

    # Overridden by the channel that also receives descriptors (fd_connection.FdChannel), and by
    # the TLS one.
    def _sendall(self, data: Buffer) -> None:
        self.sock.sendall(data)

    def _recv_some(self, flags: int = 0) -> memoryview:
        """Receive what is there (up to ``_READ_CHUNK``) into the reused buffer; valid until
        the next call."""
        buf = self._buffer()
        return buf[:self.sock.recv_into(buf, 0, flags)]

    def _recv_into(self, buf: memoryview) -> int:
        return self.sock.recv_into(buf)


class TlsChannel(BlockingChannel):
    """A :class:`BlockingChannel` over an ``ssl.SSLSocket`` (a processor's tls:// scheduler).

    One SSL object must never be used by two threads at once, and a task's own threads may
    send (stream_output) while the processor reads. So the socket stays non-blocking, every
    SSL call is made under the send lock, and the waiting is done outside it, in ``poll``.
    """

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        sock.setblocking(False)
        self._want_read = select.poll()
        self._want_read.register(sock, select.POLLIN)
        self._want_write = select.poll()
        self._want_write.register(sock, select.POLLOUT)

    def buffered(self) -> bool:
        return self.sock.pending() > 0  # type: ignore[attr-defined]

    def _sendall(self, data: Buffer) -> None:  # (called with the send lock held)
        ssl = sys.modules["ssl"]
        view = memoryview(data).cast("B")
        while view:
            try:
                view = view[self.sock.send(view):]
            except ssl.SSLWantWriteError:
                self._want_write.poll()
            except ssl.SSLWantReadError:
                self._want_read.poll()

    def _call(self, receive: Any, buf: memoryview, wait: bool) -> int:
        ssl = sys.modules["ssl"]
        while True:
            with self._send_lock:
                try:
                    return receive(buf)
                except ssl.SSLWantReadError:
                    poller = self._want_read
                except ssl.SSLWantWriteError:
                    poller = self._want_write
            if not wait:
                raise BlockingIOError
            poller.poll()

    def _recv_some(self, flags: int = 0) -> memoryview:
        buf = self._buffer()
        return buf[:self._call(self.sock.recv_into, buf, not flags)]

    def _recv_into(self, buf: memoryview) -> int:
        return self._call(self.sock.recv_into, buf, True)


__all__ = ["Connection", "Listener", "Handler", "BlockingChannel", "TlsChannel", "FRAME_HEADER"]
