"""A small ``selectors`` event loop: readiness callbacks, timers, thread-safe wake-ups.

Writes are not sent when queued: connections ask to be flushed and the loop flushes them
once per iteration, after every ready event has been handled, so whatever one iteration
produces for a peer leaves in one system call.

A loop may lend one of its sockets to another thread for a while (``lock``, ``suspend``,
``resume``): the client's thread that waits for a result reads it itself, instead of the
loop's thread reading it and then waking the waiter (one thread hand-over less per result).
"""

import collections
import functools
import heapq
import itertools
import logging
import selectors
import socket
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Set

from .spin import Spinner

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
        # Set (to a threading.Lock) when another thread may run this loop's callbacks: the
        # loop's thread then holds it for everything but the wait in select().
        self.lock: Any = None
        # Registrations lent to another thread (suspend): fileobj -> [events, callback].
        self._suspended: Dict[Any, List[Any]] = {}
        # Set (to an io/spin.py Spinner) by a loop whose messages are worth polling for
        # before it sleeps (the scheduler's); only a loop without ``lock`` spins.
        self.spinner: Optional[Spinner] = None

    # --- registration ---
    def add(self, fileobj: Any, events: int, callback: Callable[[int], Any]) -> None:
        self.selector.register(fileobj, events, callback)

    def modify(self, fileobj: Any, events: int, callback: Callable[[int], Any]) -> None:
        if self._suspended:
            lent = self._suspended.get(fileobj)
            if lent is not None:  # the borrower watches it: remember what to watch for, tell it
                lent[0], lent[1] = events, callback
                lent[2]()
                return
        self.selector.modify(fileobj, events, callback)

    def remove(self, fileobj: Any) -> None:
        if self._suspended:
            lent = self._suspended.pop(fileobj, None)
            if lent is not None:
                lent[2]()
                return
        try:
            self.selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def suspend(self, fileobj: Any, changed: Callable[[], Any] = lambda: None) -> bool:
        """Stop watching ``fileobj``: the caller (holding ``lock``) watches it and runs its
        callback itself until :meth:`resume`. ``modify`` meanwhile only records the events
        wanted (``lent_events``), ``remove`` ends the loan, and both call ``changed`` (the
        borrower may be waiting on the old events). False if it is not registered."""
        try:
            key = self.selector.unregister(fileobj)
        except (KeyError, ValueError):
            return False
        self._suspended[fileobj] = [key.events, key.data, changed]
        return True

    def lent_events(self, fileobj: Any) -> Optional[List[Any]]:
        """``[events, callback, changed]`` of a suspended ``fileobj``; None once removed."""
        return self._suspended.get(fileobj)

    def resume(self, fileobj: Any) -> None:
        lent = self._suspended.pop(fileobj, None)
        if lent is not None:
            self.selector.register(fileobj, lent[0], lent[1])

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
        poll_now = functools.partial(select, 0)
        clock = time.perf_counter
        while self._running:
            timeout: Optional[float] = None
            if self._threadsafe or self._to_flush or self._soon:
                timeout = 0
            elif self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            lock = self.lock
            spinner = self.spinner
            if spinner is not None and timeout != 0:
                started = clock()
                ready = spinner.spin(poll_now, timeout) if lock is None and spinner.worth_it() else None
                if not ready:
                    if timeout is not None:
                        timeout = max(0.0, timeout - (clock() - started))
                    ready = self._select(timeout)
                spinner.waited(clock() - started)
            elif lock is None:
                ready = select(timeout)
            else:
                ready = self._select(timeout)
            for key, mask in ready:
                key.data(mask)
            if self._timers:
                self._run_timers()
            while self._threadsafe:
                self._threadsafe.popleft()()
            while self._soon:
                self._soon.popleft()()
            if self._to_flush:
                self.flush_all()

    def _select(self, timeout: Optional[float]) -> List[Any]:
        lock = self.lock
        if lock is None:
            return self.selector.select(timeout)
        lock.release()
        try:
            return self.selector.select(timeout)
        finally:
            lock.acquire()

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
