"""``concurrent.futures.wait`` and ``as_completed`` that, inside a task, wait like ``result()``.

A task that blocks on tasks it submitted must let its processor run them (see "Nested
tasks" in ``docs/architecture.rst``): ``ScalerFuture.result()`` does so through
``task_context.wait_hook``, and code written for an executor waits through these two
functions instead. The processor installs them in place of the standard ones (in
``concurrent.futures`` and ``concurrent.futures._base``, where a function pickled by value
or a module imported later finds them) before it runs any user code. Outside a task, or
in a thread other than the task's own, they are the standard functions.

They learn that a future ended the way the standard ones do, through the future's
``_waiters`` list (:class:`FutureWaiter`), which works for any ``concurrent.futures.Future``.
"""

import collections
import functools
import threading
import time
from concurrent import futures as _futures
from concurrent.futures import _base
from typing import Any, Callable, Deque, Iterable, Iterator, List, Optional, Set

from ..utility import task_context

_standard_wait = _base.wait
_standard_as_completed = _base.as_completed
_ENDED = (_base.CANCELLED_AND_NOTIFIED, _base.FINISHED)  # what concurrent.futures.wait counts as done


class FutureWaiter:
    """Installed in the ``_waiters`` of each future not yet ended (the protocol of
    ``concurrent.futures.wait``'s own waiters): records the futures as they end, in order,
    and calls ``wake`` for each. Use as a context manager: leaving it uninstalls it."""

    def __init__(self, futures: Iterable[Any], wake: Callable[[], None]) -> None:
        self._wake = wake
        self._lock = threading.Lock()  # futures end in the client's I/O thread, or in a cancelling one
        self.ended: Deque[Any] = collections.deque()  # in the order they ended (those done already first)
        self.pending = 0
        self.failed = False  # one of them raised (not cancelled): FIRST_EXCEPTION's condition
        self._installed: List[Any] = []
        for future in futures:
            with future._condition:
                if future._state in _ENDED:
                    self.ended.append(future)
                    if future._state == _base.FINISHED and future._exception is not None:
                        self.failed = True
                else:
                    with self._lock:  # a future installed earlier may be ending meanwhile
                        self.pending += 1
                    future._waiters.append(self)
                    self._installed.append(future)

    def satisfied(self, return_when: str) -> bool:
        if return_when == _base.FIRST_COMPLETED:
            return bool(self.ended)
        if return_when == _base.FIRST_EXCEPTION and self.failed:
            return True
        return self.pending == 0

    # --- called by the futures, under their condition ---
    def add_result(self, future: Any) -> None:
        self._ended(future, False)

    def add_exception(self, future: Any) -> None:
        self._ended(future, True)

    def add_cancelled(self, future: Any) -> None:
        self._ended(future, False)

    def _ended(self, future: Any, failed: bool) -> None:
        with self._lock:
            self.ended.append(future)
            self.pending -= 1
            if failed:
                self.failed = True
        self._wake()

    def __enter__(self) -> "FutureWaiter":
        return self

    def __exit__(self, *_exc: Any) -> None:
        for future in self._installed:
            with future._condition:
                try:
                    future._waiters.remove(self)
                except ValueError:
                    pass
        self._installed = []


def in_task_thread() -> bool:
    """Inside a task, in its own thread: the one place a wait can run the task's children."""
    return (task_context.block_hook is not None and task_context.task_id is not None
            and threading.current_thread() is threading.main_thread())


@functools.wraps(_standard_wait)
def wait(fs: Iterable[Any], timeout: Optional[float] = None, return_when: str = _base.ALL_COMPLETED) -> Any:
    if not in_task_thread():
        return _standard_wait(fs, timeout, return_when)
    fs = set(fs)
    started = time.monotonic()
    with FutureWaiter(fs, task_context.wake) as waiter:
        if not waiter.satisfied(return_when):
            task_context.block_hook(lambda: waiter.satisfied(return_when), timeout)
    if timeout is not None:
        timeout = max(0.0, timeout - (time.monotonic() - started))
    return _standard_wait(fs, timeout, return_when)  # at once, unless the wait timed out


@functools.wraps(_standard_as_completed)
def as_completed(fs: Iterable[Any], timeout: Optional[float] = None) -> Iterator[Any]:
    if not in_task_thread():
        return _standard_as_completed(fs, timeout)
    return _as_completed_in_task(set(fs), timeout)


def _as_completed_in_task(fs: Set[Any], timeout: Optional[float]) -> Iterator[Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    with FutureWaiter(fs, task_context.wake) as waiter:
        left = len(fs)
        while left:
            if not waiter.ended:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is None or remaining > 0:
                    task_context.block_hook(lambda: bool(waiter.ended), remaining)
                if not waiter.ended:
                    raise _base.TimeoutError("%d (of %d) futures unfinished" % (left, len(fs)))
            left -= 1
            yield waiter.ended.popleft()


def install() -> None:
    """Put these in place of the standard functions, for the rest of this process's life."""
    for module in (_futures, _base):
        module.wait = wait  # type: ignore[attr-defined]
        module.as_completed = as_completed  # type: ignore[attr-defined]


__all__ = ["FutureWaiter", "as_completed", "in_task_thread", "install", "wait"]
