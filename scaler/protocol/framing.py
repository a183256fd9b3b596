"""Frames out of a byte stream, without I/O: the one frame reader of every connection.

A frame is ``FRAME_HEADER`` (the payload length) followed by the payload. The I/O layer
gives the reader what it reads (``feed``) and takes complete frames out (``next_frame``).
Each announced length is checked against ``limit`` before anything is allocated for it,
so a peer cannot make us reserve what it has not sent. A frame of ``BIG_FRAME`` bytes or
more that is not complete yet gets a buffer of its own, an anonymous mapping whose pages
are committed only as bytes arrive, and the I/O layer receives the rest straight into it
(``big_buffer``, ``big_received``): one copy from the kernel, no reassembly.
"""

import collections
import mmap
from typing import Deque, Optional

from .codec import BATCH_TYPE, FRAME_HEADER, Buffer, Message, decode, decode_batch, frame_length

BIG_FRAME = 1024 * 1024  # below this, reassembling in the shared buffer costs less than a mapping

_HEADER = FRAME_HEADER.size
# Private: faster to fill than a shared mapping (plain page faults), and not shared with forks.
_MAP = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}


class FrameReader:
    """Bytes in, frame payloads out. ``limit`` may change between frames (handshake, then open)."""

    __slots__ = ("limit", "_buf", "_pos", "_big", "_filled", "_batch")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()  # the receive buffer, reused for every frame under BIG_FRAME
        self._pos = 0  # where the first frame not yet taken out starts in _buf
        self._big: Optional[mmap.mmap] = None
        self._filled = 0  # bytes of _big received so far
        self._batch: Optional[Deque[Message]] = None  # next_message: the rest of a batch frame

    def feed(self, data: Buffer) -> None:
        """Take bytes read from the stream (into the big frame first, if one is pending)."""
        big = self._big
        if big is not None:
            view = memoryview(data).cast("B")
            take = min(len(view), len(big) - self._filled)
            big[self._filled:self._filled + take] = view[:take]
            self._filled += take
            data = view[take:]
        self._buf += data

    def big_buffer(self) -> Optional[memoryview]:
        """The rest of the pending big frame, to ``recv_into``; None when there is none."""
        if self._big is None:
            return None
        return memoryview(self._big)[self._filled:]

    def big_received(self, n: int) -> None:
        """Count ``n`` bytes written into the view ``big_buffer`` gave."""
        self._filled += n

    @property
    def partial(self) -> bool:
        """Part of a frame has arrived, not all of it."""
        return self._big is not None or len(self._buf) > self._pos

    @property
    def receiving_big(self) -> bool:
        """A big frame is pending: its bytes are best received into ``big_buffer``."""
        return self._big is not None

    def next_frame(self) -> Optional[Buffer]:
        """The next complete frame's payload, or None until more bytes come.

        Raises ProtocolError for an empty frame or one over ``limit``.
        """
        big = self._big
        if big is not None:
            if self._filled < len(big):
                return None
            self._big = None
            return big
        buf = self._buf
        pos = self._pos
        if len(buf) - pos >= _HEADER:
            length = frame_length(buf, self.limit, pos)
            start = pos + _HEADER
            end = start + length
            if end <= len(buf):
                self._pos = end
                return buf[start:end]
            if length >= BIG_FRAME:
                big = self._big = mmap.mmap(-1, length, **_MAP)
                self._filled = len(buf) - start
                big[:self._filled] = memoryview(buf)[start:]
                del buf[:]
                self._pos = 0
                return None
        if pos:
            del buf[:pos]
            self._pos = 0
        return None

    def next_message(self) -> Optional[Message]:
        """``next_frame`` decoded (a batch frame: its messages one by one); raises
        ProtocolError for a malformed one."""
        batch = self._batch
        if batch:
            return batch.popleft()
        frame = self.next_frame()
        if frame is None:
            return None
        if frame[0] == BATCH_TYPE:
            batch = self._batch = collections.deque(decode_batch(frame))
            return batch.popleft()
        return decode(frame)

    def clear(self) -> None:
        """Drop everything buffered (the stream is gone)."""
        self._buf = bytearray()
        self._pos = 0
        self._big = None
        self._filled = 0
        self._batch = None


__all__ = ["BIG_FRAME", "FrameReader"]
