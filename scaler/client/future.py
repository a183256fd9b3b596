"""``ScalerFuture``: a ``concurrent.futures.Future`` whose result is deserialised on first use.

The client's I/O thread only stores the result bytes; the first ``result()`` (or a
callback, or ``asyncio.wrap_future``) deserialises them in the caller's thread. So
``wait``, ``as_completed`` and asyncio work unchanged, and the I/O thread stays free.
"""

import threading
import time
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING, RUNNING
from typing import TYPE_CHECKING, Any, Callable, List, Optional

from ..utility import task_context
from ..utility.exceptions import DeserializeObjectError

if TYPE_CHECKING:  # imported by profiling_info(): it is a dataclass, and dataclasses is not light
    from ..utility.metadata.profile_result import ProfileResult

_NOT_DECODED = object()
_DONE = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)
# Guards the creation of a future's Condition and the state changes made without one. Held
# for a few bytecodes, never while waiting or deserialising.
_LOCK = threading.Lock()


class ScalerFuture(Future):
    """A ``Future`` of ~200 bytes instead of ~1.6 KB: 100 000 tasks in flight are 100 000
    futures in the client.

    ``Future.__init__`` gives every future a ``threading.Condition`` (1.3 KB with its RLock
    and bound methods) and two lists; here they are made on first use (``_condition``,
    ``_waiters`` and ``_done_callbacks`` are properties), which for most futures is never:
    the I/O thread finishes a future nobody waits on without one (``_set_payload``), and
    ``done()``/``result()`` of a finished future read its terminal state without locking.
    All fields are slots, so no instance dict is made either."""

    __slots__ = ("_state", "_result", "_exception", "_cond", "_waiter_list", "_callback_list", "_task_id",
                 "_canceller", "_payload", "_deserialize", "_temp_objects", "_profile", "_started_at", "_ended_at",
                 "_group")

    def __init__(self, task_id: bytes, canceller: Optional[Callable[[bytes], None]] = None,
                 started_at: Optional[float] = None) -> None:
        # Future.__init__ is not called on purpose: see the class docstring.
        self._state = PENDING
        self._result: Any = None
        self._exception: Optional[BaseException] = None
        self._cond: Optional[threading.Condition] = None
        self._waiter_list: Optional[List[Any]] = None
        self._callback_list: Optional[List[Any]] = None
        self._task_id = task_id
        self._canceller = canceller
        self._payload: Any = None
        self._deserialize: Optional[Callable[[Any], Any]] = None
        self._temp_objects: tuple = ()
        self._profile = ""  # the result's ProfileResult text, when the client profiles its tasks
        # A map passes one float for its whole batch (24 bytes a future less): its tasks are
        # submitted within the same few milliseconds.
        self._started_at = time.monotonic() if started_at is None else started_at
        self._ended_at: Optional[float] = None
        self._group: Optional[Countdown] = None  # a map waiting for it among others (wait_all)

    @property  # type: ignore[override]
    def _condition(self) -> threading.Condition:
        cond = self._cond
        if cond is None:
            with _LOCK:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition()
        return cond

    @property
    def _waiters(self) -> List[Any]:  # concurrent.futures.wait/as_completed install theirs here
        waiters = self._waiter_list
        if waiters is None:
            with self._condition:
                waiters = self._waiter_list
                if waiters is None:
                    waiters = self._waiter_list = []
        return waiters

    @property
    def _done_callbacks(self) -> List[Any]:
        callbacks = self._callback_list
        if callbacks is None:
            with self._condition:
                callbacks = self._callback_list
                if callbacks is None:
                    callbacks = self._callback_list = []
        return callbacks

    @property
    def task_id(self) -> bytes:
        return self._task_id

    def _set_payload(self, payload: Any, deserialize: Callable[[Any], Any]) -> None:
        """The I/O thread's success path. A future nobody has waited on, added a callback to
        or cancelled has no Condition: it is finished under ``_LOCK`` (so a thread that makes
        the Condition afterwards sees it finished) without making one."""
        with _LOCK:
            if self._cond is None:
                if self._state != PENDING and self._state != RUNNING:
                    raise InvalidStateError("%r is already done" % (self,))  # (the payload is not kept)
                self._payload = payload
                self._deserialize = deserialize
                self._ended_at = time.monotonic()
                self._result = _NOT_DECODED
                self._state = FINISHED
                group, self._group = self._group, None
                if group is not None and group.one_done(False):
                    group.event.set()
                return
        self._payload = payload  # before set_result wakes a waiter that decodes it
        self._deserialize = deserialize
        try:
            self.set_result(_NOT_DECODED)
        except InvalidStateError:
            self._payload = None  # cancelled meanwhile: nobody reads it (it may hold a descriptor)
            raise

    def _invoke_callbacks(self) -> None:
        # Every other way to the end (set_result, set_exception, cancel) comes through here,
        # after the state changed: tell a waiting map first. Under _LOCK, always: wait_all
        # reads the state and sets _group under it, so one of the two counts this future.
        with _LOCK:
            group, self._group = self._group, None
            if group is not None and group.one_done(self._exception is not None or self._state != FINISHED):
                group.event.set()
        super()._invoke_callbacks()  # type: ignore[misc]

    def set_result(self, result: Any) -> None:
        self._ended_at = time.monotonic()
        super().set_result(result)

    def set_exception(self, exception: Optional[BaseException]) -> None:
        self._ended_at = time.monotonic()
        super().set_exception(exception)

    def done(self) -> bool:
        return self._state in _DONE  # terminal: once true, never false again, no lock needed

    def cancelled(self) -> bool:
        return self._state == CANCELLED or self._state == CANCELLED_AND_NOTIFIED

    def task_duration(self) -> float:
        """Seconds from ``submit`` to the task's end (result, error or cancellation), as this
        client saw them: queueing and transfers included. ``ValueError`` before it is done.
        The time spent running alone is ``profiling_info().duration_s`` (``profiling=True``)."""
        ended = self._ended_at
        if ended is None or not self.done():
            raise ValueError("task %s is not done yet: task_duration() is available once it is"
                             % self._task_id.hex())
        return ended - self._started_at

    def result(self, timeout: Optional[float] = None) -> Any:
        if self._state == FINISHED and self._exception is None:
            value = self._result  # finished is final: no lock, no Condition
        else:
            if task_context.wait_hook is not None and not self.done():
                timeout = _wait_in_task(self, timeout)
            elif not self.done():
                timeout = self._lead(timeout)
            value = super().result(timeout)
        if value is _NOT_DECODED:
            value = self._decode()
        return value

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        if self._state == FINISHED:
            return self._exception
        if task_context.wait_hook is not None and not self.done():
            timeout = _wait_in_task(self, timeout)
        elif not self.done():
            timeout = self._lead(timeout)
        return super().exception(timeout)

    def _lead(self, timeout: Optional[float]) -> Optional[float]:
        """Wait by reading the scheduler connection, if the client lets this thread
        (``leader.py``); returns what is left of ``timeout`` for the ordinary wait."""
        lead = getattr(self._canceller, "lead", None)
        return timeout if lead is None else lead(self, timeout)

    def _decode(self) -> Any:
        """Deserialise the result once, outside any lock; if two threads race, both return
        the object stored first."""
        with _LOCK:
            if self._result is not _NOT_DECODED:
                return self._result
            payload, deserialize = self._payload, self._deserialize
        try:
            value = deserialize(payload)  # type: ignore[misc]
        except Exception as exc:
            raise DeserializeObjectError("cannot deserialise the result of task %s: %r"
                                         % (self._task_id.hex(), exc)) from exc
        with _LOCK:
            if self._result is _NOT_DECODED:
                self._result = value
                self._payload = None
            return self._result

    def running(self) -> bool:
        """True from the moment ``submit`` returns until the future is done, as upstream.

        Unlike ``ProcessPoolExecutor``'s futures, a ScalerFuture does not wait in a
        ``PENDING`` state the caller can see: the task is the cluster's as soon as it is
        submitted (queued or running), and ``cancel()`` still works on it.
        """
        return self._state == PENDING or self._state == RUNNING

    def profiling_info(self) -> "ProfileResult":
        """What running the task cost (``Client(profiling=True)``): ``duration_s``,
        ``memory_peak``, ``cpu_time_s``. ``ValueError`` before the task is done, and for a task
        that was not profiled."""
        if not self.done():
            raise ValueError("task %s is not done yet: profiling_info() is available once it is"
                             % self._task_id.hex())
        from ..utility.metadata.profile_result import ProfileResult
        profile = ProfileResult.from_detail(self._profile) if self._profile else None
        if profile is None:
            raise ValueError("task %s has no profiling info: create the client with Client(..., profiling=True)"
                             % self._task_id.hex())
        return profile

    def __await__(self) -> Any:
        """``await future`` in a coroutine (as upstream): the result, or the task's exception."""
        import asyncio
        return asyncio.wrap_future(self).__await__()

    def cancel(self, timeout: Optional[float] = None) -> bool:
        """Cancel the task wherever it is: queued, or running (its processor is restarted).

        ``timeout`` is accepted for upstream compatibility: the future is cancelled at once
        here (the scheduler is told asynchronously), so there is nothing to wait for."""
        if self.done():
            return False
        cancelled = self._cancel_here()
        if cancelled and self._canceller is not None:
            self._canceller(self._task_id)
        return cancelled

    def _cancel_here(self) -> bool:
        """Cancel this future only (the scheduler is not told).

        ``Future.cancel`` leaves the state ``CANCELLED`` for an executor to confirm; no
        executor owns a ScalerFuture, so it is confirmed here — otherwise
        ``concurrent.futures.wait``/``as_completed`` would never count it as done.

        The confirmation is ``set_running_or_notify_cancel``'s cancelled branch, done here
        under the Condition: that method, called on a future another thread (or an earlier
        call) already confirmed, logs a CRITICAL "in unexpected state" line before raising,
        which without logging configured lands on stderr, one line per future."""
        if self._ended_at is None:  # before cancel() runs the done-callbacks, which may ask task_duration()
            self._ended_at = time.monotonic()  # (should it fail, the result that won sets its own)
        cancelled = super().cancel()
        if cancelled:
            with self._condition:
                if self._state == CANCELLED:
                    self._state = CANCELLED_AND_NOTIFIED
                    for waiter in self._waiters:
                        waiter.add_cancelled(self)
        return cancelled

    def __repr__(self) -> str:
        return "<ScalerFuture %s %s>" % (self._task_id.hex()[:12], self._state)


class Countdown:
    """Wakes one thread once ``remaining`` futures are done, or as soon as one fails: what
    ``Client.map`` waits on, instead of waking for every result in turn."""

    __slots__ = ("remaining", "event")

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining
        self.event = threading.Event()

    def one_done(self, failed: bool) -> bool:
        """Count one future as ended (``_LOCK`` held); True when the waiter should wake."""
        self.remaining -= 1
        return failed or self.remaining <= 0


def wait_all(futures: List[ScalerFuture], slice_seconds: float = 1.0) -> None:
    """Return once every one of ``futures`` is done, or one of them failed or was cancelled.

    One wake-up for the whole list: ``[f.result() for f in futures]`` alone would wake this
    thread for each result that ends while it waits (and contend with the I/O thread for
    the GIL each time), which on a stream of short tasks costs as much as the tasks' own
    messages. Waits in slices so that Ctrl-C is seen.

    A future whose slot another waiter holds (a thread leading on it, another wait_all) is
    not taken from it: it is looked at after each slice instead, so neither waiter hangs."""
    group = Countdown(len(futures))
    failed = False
    unwatched: List[ScalerFuture] = []
    for start in range(0, len(futures), 1024):
        with _LOCK:  # against _set_payload/_invoke_callbacks claiming the group concurrently
            for future in futures[start:start + 1024]:
                state = future._state
                if state == PENDING or state == RUNNING:
                    if future._group is None:
                        future._group = group
                    else:
                        unwatched.append(future)
                elif group.one_done(state != FINISHED or future._exception is not None):
                    failed = True
    if failed or group.remaining <= 0:
        return
    while not group.event.wait(slice_seconds):
        if unwatched:
            with _LOCK:
                still = []
                for future in unwatched:
                    state = future._state
                    if state == PENDING or state == RUNNING:
                        still.append(future)
                    elif group.one_done(state != FINISHED or future._exception is not None):
                        return
                unwatched = still
                if group.remaining <= 0:
                    return


def _wait_in_task(future: Future, timeout: Optional[float]) -> Optional[float]:
    """Inside a task: wait through the processor, which runs the awaited sub-tasks meanwhile
    if they land on this worker. Returns what is left of ``timeout``."""
    hook = task_context.wait_hook
    if hook is None:
        return timeout
    started = time.monotonic()
    hook(future, timeout)
    return None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
