"""A thread waiting in ``result()`` reads the scheduler connection itself (leader/followers).

Otherwise a result reaches a waiting thread in two hand-overs: the kernel wakes the
client's I/O thread, which reads and decodes the frame, finishes the future and wakes the
waiter (a futex, and often a second one for the GIL). Here the waiter takes the loop's
lock, borrows the scheduler socket from the I/O thread's selector (``EventLoop.suspend``)
and polls it itself, so the kernel wakes the one thread that wants the result. Measured on
a ``submit(noop).result()`` loop: about 45 µs less per round trip and one context switch
instead of two or three in the client.

The borrower runs exactly what the I/O thread would (the connection's own event
callback), under the lock the I/O thread holds for everything but its ``select()``, so the
two never run client code at once. It gives the socket back as soon as its future is done,
and whatever finishes that future in another thread (the I/O thread fetching a big result
from object storage, a ``cancel()``, the client failing) writes to a pipe it polls too.

Over TLS the same, except that records the SSL object has already decrypted are not
visible to ``poll()``: the leader reads them (``SSLSocket.pending()``) before it polls.
That SIGINT is held back while a frame is handled matters more there: Python's ssl module
runs pending signal handlers right after a successful SSL read or write, so a
KeyboardInterrupt raised there would lose bytes already taken from the SSL object, or
have a record already sent written again.

Ctrl-C: in the main thread, SIGINT is held back while a frame is being handled (it would
otherwise drop a result half-delivered), and its handler (Python's, which raises
KeyboardInterrupt, or one of the user's own) runs once the socket is given back; while
the leader only polls, it runs at once. With SIGINT ignored (a script started in the
background with ``&``, or under ``nohup``) or left to its default action there is
nothing to hold back.
"""

import functools
import os
import select
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Optional, Tuple

from . import future as future_module
from ..io.spin import Spinner

try:  # signal.signal() and getsignal() wrap these to convert to and from enums: 10x the cost
    import _signal as _raw_signal
except ImportError:  # pragma: no cover - CPython has it since 3.5
    _raw_signal = signal  # type: ignore[assignment]

if TYPE_CHECKING:
    from .agent import ClientAgent

LEAD_SLICE_SECONDS = 1.0  # the longest single poll: a net under wake-ups that cannot reach the leader
# select.poll is missing on Windows; SCALER_CLIENT_LEAD=0 turns leading off (the I/O thread reads everything).
_ENABLED = hasattr(select, "poll") and os.environ.get("SCALER_CLIENT_LEAD", "1") != "0"
_READ, _WRITE = 1, 2  # selectors.EVENT_READ, EVENT_WRITE (selectors is not imported for two ints)


class _Wake:
    """Sits in the awaited future's ``_group`` slot while a leader waits on it: another
    thread finishing the future writes a byte to the pipe the leader polls."""

    __slots__ = ("thread", "fd")

    def __init__(self, thread: int, fd: int) -> None:
        self.thread = thread
        self.fd = fd

    def one_done(self, failed: bool) -> bool:
        self.changed()
        return False  # no event to set: the byte is the wake-up

    def changed(self) -> None:
        """Also what the loop calls when the lent socket's owner wants other events (a write
        backlog to flush) or closed it: a poll on the old events would not see it."""
        if threading.get_ident() != self.thread:
            try:
                os.write(self.fd, b"\0")
            except OSError:
                pass


class _SigintGuard:
    """SIGINT in the main thread while leading: the handler it stands in for runs at once
    while polling, and is held back while a frame is handled, to run (``release``) after
    the leader gave the socket back."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler  # Python's default_int_handler, or the user's own
        self.polling = False
        self.deferred: Optional[Tuple[int, Any]] = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.polling:
            self.handler(signum, frame)
        else:
            self.deferred = (signum, frame)

    def release(self) -> None:
        """Put the handler back (unless it replaced us: a handler that, run while we polled,
        installed another for the next Ctrl-C keeps it); run it if a SIGINT was held back
        (it may raise)."""
        if _raw_signal.getsignal(signal.SIGINT) is self:
            _raw_signal.signal(signal.SIGINT, self.handler)
        if self.deferred is not None:
            signum, frame = self.deferred
            self.deferred = None
            self.handler(signum, frame)


def hold_sigint() -> Any:
    """For a TLS write from the caller's thread (``ClientAgent.submit_now``): in the main
    thread, SIGINT's Python handler held back until ``release()`` (see ``_SigintGuard``),
    because Python's ssl module runs pending handlers right after a successful write and a
    KeyboardInterrupt there would have the record written again. Returns an object whose
    ``release()`` ends that (and may raise what the handler raises), or None when the write
    must not be made here (a handler set from C: it cannot be stood in for)."""
    if threading.current_thread() is not threading.main_thread():
        return _NOT_HELD
    handler = _raw_signal.getsignal(signal.SIGINT)
    if handler is None:
        return None
    if isinstance(handler, _SigintGuard) or not callable(handler):
        return _NOT_HELD  # a leader's guard already holds it back (a done-callback), or no Python handler
    guard = _SigintGuard(handler)
    _raw_signal.signal(signal.SIGINT, guard)
    return guard


class _NotHeld:
    @staticmethod
    def release() -> None:
        pass


_NOT_HELD = _NotHeld()


class Leader:
    """One per client; ``lock`` is also the client loop's ``EventLoop.lock``."""

    def __init__(self, agent: "ClientAgent") -> None:
        self.agent = agent
        self.lock = threading.Lock()
        self._leading = False
        self._dispatching = 0  # the thread running callbacks as leader (a done-callback calling result())
        self._closed = False
        self._poller: Any = None
        self._wake_r = self._wake_w = -1
        self.results_led = 0  # waits that ended with the future done (a figure, for tests)
        # io/spin.py: poll a little before sleeping while results come back quickly
        spinner = Spinner()
        self._spinner: Optional[Spinner] = spinner if spinner.budget > 0 else None

    def wait(self, future: "future_module.ScalerFuture", timeout: Optional[float]) -> Optional[float]:
        """Read the scheduler connection until ``future`` is done, the connection ends or
        ``timeout`` passes; returns what is left of ``timeout``. Does nothing (another
        thread leads, we are the I/O thread...) when it cannot lead:
        the caller then waits the ordinary way."""
        agent = self.agent
        conn = agent.scheduler
        if (not _ENABLED or self._closed or self._leading or conn is None or not conn.opened
                or agent.failure is not None or agent.on_io_thread() or self._dispatching == threading.get_ident()):
            return timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        guard: Optional[_SigintGuard] = None
        if threading.current_thread() is threading.main_thread():
            handler = _raw_signal.getsignal(signal.SIGINT)
            if handler is None or isinstance(handler, _SigintGuard):
                return timeout  # set from C, so unknown (or a leader's, re-entered): no leading
            if callable(handler):  # Python's own, or the user's: held back while a frame is handled
                guard = _SigintGuard(handler)
                _raw_signal.signal(signal.SIGINT, guard)
            # else SIG_IGN or SIG_DFL: no Python code runs on SIGINT, nothing to hold back
        try:
            if self.lock.acquire(True, -1 if timeout is None else timeout):
                try:
                    self._lead(future, conn, deadline, guard)
                finally:
                    if self._closed and not self._leading:
                        # close() found the lock taken (by us, or by the thread leading now, which
                        # polls the pipe and closes it on its own way out): unless someone leads,
                        # the pipe is ours to close.
                        self._close_pipe()
                    self.lock.release()
        finally:
            if guard is not None:
                guard.release()
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _lead(self, future: "future_module.ScalerFuture", conn: Any, deadline: Optional[float],
              guard: Optional[_SigintGuard]) -> None:
        """With the lock held."""
        agent = self.agent
        loop = agent.loop
        if self._leading or self._closed or future.done() or conn.closed or agent.failure is not None:
            return
        if self._poller is None:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._poller = select.poll()
            self._poller.register(self._wake_r, select.POLLIN)
        me = threading.get_ident()
        wake = _Wake(me, self._wake_w)
        with future_module._LOCK:
            if future._group is not None or future.done():
                return  # a map waits on it too (its slot is taken), or it just finished
            future._group = wake
        sock = conn.sock
        fd = sock.fileno()
        # TLS: records the SSL object has decrypted already are invisible to poll(); they are
        # read before polling again (the I/O thread's loop does the same with a zero timer).
        pending = sock.pending if conn.tls else None
        first_timer = loop._timers[0] if loop._timers else None
        if not loop.suspend(sock, wake.changed):
            self._release(future, wake)
            return
        self._leading = True
        poller = self._poller
        spinner = self._spinner
        poll_now = functools.partial(poller.poll, 0)
        clock = time.perf_counter
        try:
            while not future.done() and agent.failure is None:
                lent = loop.lent_events(sock)
                if lent is None:
                    break  # the connection closed
                events = lent[0]
                poller.register(fd, (select.POLLIN if events & _READ else 0) | (select.POLLOUT if events & _WRITE else 0))
                wait = LEAD_SLICE_SECONDS
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        break
                if pending is not None and events & _READ and pending():
                    ready = [(fd, select.POLLIN)]
                else:
                    self.lock.release()
                    try:
                        if guard is not None:
                            guard.polling = True
                        if spinner is None:
                            ready = poller.poll(max(1, int(wait * 1000 + 0.999)))
                        else:
                            started = clock()
                            ready = spinner.spin(poll_now, wait) if spinner.worth_it() else None
                            if not ready:
                                left = wait - (clock() - started)
                                ready = poller.poll(max(1, int(left * 1000 + 0.999)))
                            spinner.waited(clock() - started)
                    finally:
                        if guard is not None:
                            guard.polling = False
                        interrupted = self._reacquire()
                    if interrupted is not None:
                        raise interrupted
                for ready_fd, revents in ready:
                    if ready_fd == self._wake_r:
                        _drain(self._wake_r)
                        continue
                    lent = loop.lent_events(sock)
                    if lent is None:
                        break
                    mask = 0
                    if revents & ~select.POLLIN:
                        mask |= _WRITE
                    if revents & ~select.POLLOUT:
                        mask |= _READ
                    mask &= lent[0]
                    if mask:
                        self._dispatching = me
                        try:
                            lent[1](mask)  # the connection's own event callback, as the loop would run it
                        finally:
                            self._dispatching = 0
                if loop._to_flush:
                    loop.flush_all()
        finally:
            self._leading = False
            try:
                poller.unregister(fd)
            except (KeyError, ValueError):
                pass
            if loop.lent_events(sock) is not None:
                loop.resume(sock)
            self._release(future, wake)
            # What ran here may have given the loop work its thread does not know about yet.
            if loop._soon or loop._to_flush or (loop._timers[0] if loop._timers else None) is not first_timer:
                loop.call_soon_threadsafe(_nothing)
        if future.done():
            self.results_led += 1

    def _reacquire(self) -> Optional[BaseException]:
        """Take the lock back even if a signal handler raises meanwhile (in the main thread,
        an acquire that waits can be interrupted): the socket must be given back with it."""
        error = None
        while True:
            try:
                self.lock.acquire()
                return error
            except BaseException as exc:  # raised by the caller once the socket is back
                error = exc

    def _release(self, future: "future_module.ScalerFuture", wake: _Wake) -> None:
        with future_module._LOCK:
            if future._group is wake:
                future._group = None

    def close(self) -> None:
        """The client stopped (its I/O thread has ended)."""
        self._closed = True
        if self.lock.acquire(False):  # else a leader holds it, and closes the pipe on its way out
            try:
                if not self._leading:
                    self._close_pipe()
            finally:
                self.lock.release()

    def _close_pipe(self) -> None:
        if self._poller is not None:
            self._poller = None
            os.close(self._wake_r)
            os.close(self._wake_w)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass


def _nothing() -> None:
    pass


__all__ = ["Leader", "LEAD_SLICE_SECONDS", "hold_sigint"]
