"""Framed connections over a Unix socketpair that also pass file descriptors (``SCM_RIGHTS``).

The worker agent and its processor hand each other big payloads as memfds
(``scaler/io/shm.py``) instead of copying them through the socketpair. A descriptor
travels with the first byte of the frame that uses it (or earlier: a receiver keeps the
descriptors it gets in arrival order, and each message that carries one takes the oldest),
so it has always arrived by the time its frame is complete. Either end closes whatever
descriptors it still holds when the connection closes.
"""

import collections
import logging
import os
import socket
import time
from typing import Deque, Optional

from ..protocol.codec import Message, encode_parts
from .connection import _READ_BUDGET, _READ_CHUNK, BlockingChannel, Connection, read_buffer
from .shm import ANC_BUFSIZE, MAX_FDS_PER_SEND, ShmError, fd_rights, received_fds

logger = logging.getLogger(__name__)


def _close_all(fds: Deque[int]) -> None:
    while fds:
        try:
            os.close(fds.popleft())
        except OSError:
            pass


class FdConnection(Connection):
    """A :class:`Connection` (no handshake, no TLS) whose frames may carry one descriptor each."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._wfds: Deque[int] = collections.deque()  # to send, with the next bytes that go
        self.received_fds: Deque[int] = collections.deque()
        super().__init__(*args, **kwargs)
        self.batching = False  # a descriptor goes with the frame of the message that takes it

    def send_with_fd(self, msg: Message, fd: int) -> bool:
        """Queue ``msg`` with ``fd``, whose ownership passes to the connection (it is closed once
        sent). False, with ``fd`` left to the caller, if it cannot go (closed, too many queued)."""
        if self.closed or not self.opened or len(self._wfds) >= MAX_FDS_PER_SEND:
            return False
        self._wfds.append(fd)
        self.send(msg)
        return True

    def take_fd(self) -> Optional[int]:
        """The oldest descriptor received and not yet taken (a message that carries one takes it)."""
        return self.received_fds.popleft() if self.received_fds else None

    def flush(self) -> None:
        if self._wfds and not self.closed and self._wbuf:
            # The descriptors go with one byte of the first queued frame, which is at or before
            # the frames that carry them; the rest follows the ordinary way.
            head = memoryview(self._wbuf[0]).cast("B")
            fds = list(self._wfds)
            try:
                sent = self.sock.sendmsg([head[:1]], fd_rights(fds))
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self.close("send failed: %s" % exc)
                return
            if sent:
                self._wfds.clear()
                for fd in fds:
                    os.close(fd)
                self.write_backlog -= 1
                if len(head) == 1:
                    self._wbuf.popleft()
                else:
                    self._wbuf[0] = head[1:]
        super().flush()

    def _read(self) -> None:
        budget = _READ_BUDGET
        sock = self.sock
        reader = self._reader
        while budget > 0 and not self.closed and not self._read_paused:
            try:
                big = reader.big_buffer()
                if big is not None:
                    n, ancdata, flags, _ = sock.recvmsg_into([big[:min(len(big), budget)]], ANC_BUFSIZE)
                    big.release()
                    self.received_fds.extend(received_fds(ancdata, flags))
                    reader.big_received(n)
                else:
                    scratch = read_buffer(self.loop)
                    n, ancdata, flags, _ = sock.recvmsg_into([scratch], ANC_BUFSIZE)
                    if ancdata or flags:
                        self.received_fds.extend(received_fds(ancdata, flags))
                    reader.feed(scratch[:n])
                if n:
                    budget -= n
                    self._last_read = time.monotonic()
                    self._deliver_ready()
                    if big is None and n < _READ_CHUNK and not ancdata:
                        return
                    continue
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ShmError included: descriptors were lost
                self.close("receive failed: %s" % exc)
                return
            self.close("connection closed by %s" % self.peer)
            return

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        super().close(reason)
        _close_all(self._wfds)
        _close_all(self.received_fds)


class FdChannel(BlockingChannel):
    """The blocking end (the processor's) of an :class:`FdConnection`."""

    def __init__(self, sock: socket.socket, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(sock, *args, **kwargs)
        self.received_fds: Deque[int] = collections.deque()

    def send_with_fd(self, msg: Message, fd: int) -> None:
        """Send ``msg`` with a copy of ``fd`` (the caller still owns and closes ``fd``)."""
        parts = encode_parts(msg)
        with self._send_lock:
            head = memoryview(parts[0]).cast("B")
            sent = 0
            while not sent:
                sent = self.sock.sendmsg([head[:1]], fd_rights([fd]))
            self.sock.sendall(head[1:])
            for part in parts[1:]:
                self.sock.sendall(part)

    def take_fd(self) -> Optional[int]:
        return self.received_fds.popleft() if self.received_fds else None

    def _recv_some(self, flags: int = 0) -> memoryview:
        buf = self._buffer()
        n, ancdata, msg_flags, _ = self.sock.recvmsg_into([buf], ANC_BUFSIZE, flags)
        if ancdata or msg_flags:
            self.received_fds.extend(received_fds(ancdata, msg_flags))
        return buf[:n]

    def _recv_into(self, buf: memoryview) -> int:
        n, ancdata, msg_flags, _ = self.sock.recvmsg_into([buf], ANC_BUFSIZE)
        if ancdata or msg_flags:
            self.received_fds.extend(received_fds(ancdata, msg_flags))
        return n

    def close_fds(self) -> None:
        _close_all(self.received_fds)


__all__ = ["FdConnection", "FdChannel", "ShmError"]
