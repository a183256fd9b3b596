"""A small ``selectors`` event loop: readiness callbacks, timers, thread-safe wake-ups.

Writes are not sent when queued: connections ask to be flushed and the loop flushes them
once per iteration, after every ready event has been handled, so whatever one iteration
produces for a peer leaves in one system call.
"""

import collections
import heapq
import itertools
import logging
import selectors
import socket
import time
from typing import Any, Callable, Deque, List, Optional, Set

logger = logging.getLogger(__name__)


class Timer:
    __slots__ = ("when", "callback", "interval", "cancelled")

    def __init__(self, when: float, callback: Callable[[], Any], interval: Optional[float]) -> None:
        self.when = when
        self.callback = callback
        self.interval = interval
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._timers: List[Any] = []
        self._sequence = itertools.count()
        self._to_flush: Set[Any] = set()
        self._threadsafe: Deque[Callable[[], Any]] = collections.deque()
        self._soon: Deque[Callable[[], Any]] = collections.deque()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._wake_pending = False
        self.selector.register(self._wake_reader, selectors.EVENT_READ, self._on_wake)
        self._running = False
        self.closed = False
        self.read_buffer: Optional[memoryview] = None  # connection.read_buffer: one receive buffer per loop

    # --- registration ---
    def add(self, fileobj: Any, events: int, callback: Callable[[int], Any]) -> None:
        self.selector.register(fileobj, events, callback)

    def modify(self, fileobj: Any, events: int, callback: Callable[[int], Any]) -> None:
        self.selector.modify(fileobj, events, callback)

    def remove(self, fileobj: Any) -> None:
        try:
            self.selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def want_flush(self, connection: Any) -> None:
        self._to_flush.add(connection)

    def call_soon(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` in this iteration, after the ready events and before the flush."""
        self._soon.append(callback)

    # --- timers ---
    def call_later(self, delay: float, callback: Callable[[], Any]) -> Timer:
        timer = Timer(time.monotonic() + delay, callback, None)
        heapq.heappush(self._timers, (timer.when, next(self._sequence), timer))
        return timer

    def call_every(self, interval: float, callback: Callable[[], Any]) -> Timer:
        timer = Timer(time.monotonic() + interval, callback, interval)
        heapq.heappush(self._timers, (timer.when, next(self._sequence), timer))
        return timer

    # --- cross-thread ---
    def call_soon_threadsafe(self, callback: Callable[[], Any]) -> None:
        self._threadsafe.append(callback)
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._wake_writer.send(b"\0")
            except (BlockingIOError, OSError):
                pass

    def _on_wake(self, _mask: int) -> None:
        # Drain first, then clear the flag: a writer that saw the flag still set has already
        # queued its callback, which this iteration runs; any later writer sends a new byte.
        try:
            while self._wake_reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self._wake_pending = False

    # --- running ---
    def stop(self) -> None:
        """Stop after the current iteration (call from the loop thread, or via call_soon_threadsafe)."""
        self._running = False

    def run(self) -> None:
        self._running = True
        select = self.selector.select
        while self._running:
            timeout: Optional[float] = None
            if self._threadsafe or self._to_flush or self._soon:
                timeout = 0
            elif self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            for key, mask in select(timeout):
                key.data(mask)
            if self._timers:
                self._run_timers()
            while self._threadsafe:
                self._threadsafe.popleft()()
            while self._soon:
                self._soon.popleft()()
            if self._to_flush:
                self.flush_all()

    def flush_all(self) -> None:
        pending, self._to_flush = self._to_flush, set()
        for connection in pending:
            connection.flush()

    def _run_timers(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, timer = heapq.heappop(timers)
            if timer.cancelled:
                continue
            if timer.interval is not None:
                timer.when = max(timer.when + timer.interval, now)
                heapq.heappush(timers, (timer.when, next(self._sequence), timer))
            try:
                timer.callback()
            except Exception:  # a failing timer must not kill the loop
                logger.exception("timer callback failed")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for key in list(self.selector.get_map().values()):
            if key.fileobj not in (self._wake_reader,):
                try:
                    key.fileobj.close()
                except Exception:
                    pass
        self.selector.close()
        self._wake_reader.close()
        self._wake_writer.close()
