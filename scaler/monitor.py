"""Read a scheduler's status from Python: ``scaler.monitor``.

The scheduler publishes a status snapshot on its monitor address (the scheduler's port + 2
by default) about once a second. Each snapshot is a plain dict; its fields are documented
in ``docs/monitoring.rst``. With ``monitor`` this module (``from scaler import monitor``)::

    status = monitor.snapshot("tcp://127.0.0.1:8518")          # one snapshot
    print(len(status["workers"]), status["tasks"]["queued"])

    for status in monitor.subscribe("tcp://127.0.0.1:8518"):   # every snapshot, as it comes
        print(status["rates"]["finished"])

    monitor.wait_for("tcp://127.0.0.1:8518", lambda s: len(s["workers"]) >= 4, timeout=30)

Connections use the same handshake as every other peer: give ``auth_key`` (or set
``SCALER_AUTH_KEY``) when the scheduler has one. A ``tls://`` monitor address is verified
against ``tls_ca`` (or ``SCALER_TLS_CA``), else the system's trusted certificates. Every
wait has a timeout; a snapshot that does not come in time raises ``TimeoutError``, a lost
or refused connection :class:`MonitorError`.
"""

import json
import os
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional, Union

from .io.address import connectable_host, parse_address
from .io.dial import DialError, dial, receive
from .protocol.codec import Message
from .protocol.framing import FrameReader
from .protocol.handshake import normalize_key
from .protocol.messages import ROLE_MONITOR, StatusSnapshot

DEFAULT_TIMEOUT_SECONDS = 5.0
MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024
AUTH_KEY_ENV = "SCALER_AUTH_KEY"
TLS_CA_ENV = "SCALER_TLS_CA"

Status = Dict[str, Any]


class MonitorError(ConnectionError):
    """The monitor connection was refused (wrong key, other protocol version) or lost."""


class Subscription:
    """One blocking connection to a monitor address; :meth:`next` returns the next snapshot.

    Each snapshot dict also carries ``"sequence"`` (the scheduler's snapshot counter).
    """

    def __init__(self, address: str, auth_key: Union[str, bytes, None] = None,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS, tls_ca: Optional[str] = None) -> None:
        self.address = address
        self.timeout = timeout
        if auth_key is None:
            auth_key = os.environ.get(AUTH_KEY_ENV) or None
        self._sock: Optional[socket.socket] = None
        self._reader = FrameReader(MAX_SNAPSHOT_BYTES)
        try:
            self._sock = dial(connectable_host(parse_address(address)), ROLE_MONITOR, normalize_key(auth_key),
                              tls_ca or os.environ.get(TLS_CA_ENV) or None, timeout, self._reader, self._what)
        except DialError as exc:
            raise MonitorError(str(exc)) from None

    @property
    def _what(self) -> str:
        return "the monitor at %s" % self.address

    def _recv(self, deadline: float) -> Message:
        sock = self._sock
        if sock is None:
            raise MonitorError("subscription to %s is closed" % self.address)
        try:
            return receive(sock, self._reader, deadline, self._what)
        except DialError as exc:
            raise MonitorError(str(exc)) from None
        except TimeoutError:
            raise TimeoutError("no status from the monitor at %s within %.1fs" % (self.address, self.timeout)) \
                from None

    def next(self, timeout: Optional[float] = None) -> Status:
        """The next snapshot; TimeoutError if none comes within ``timeout`` (default: the subscription's)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            msg = self._recv(deadline)
            if type(msg) is StatusSnapshot:
                try:
                    status = json.loads(bytes(msg.payload).decode("utf-8"))
                except ValueError as exc:
                    raise MonitorError("undecodable status from %s: %s" % (self.address, exc)) from None
                status["sequence"] = msg.sequence
                return status

    def __iter__(self) -> Iterator[Status]:
        while True:
            yield self.next()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def interrupt(self) -> None:
        """Wake a :meth:`next` blocked in another thread (it raises MonitorError)."""
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def subscribe(address: str, auth_key: Union[str, bytes, None] = None,
              timeout: float = DEFAULT_TIMEOUT_SECONDS, tls_ca: Optional[str] = None) -> Iterator[Status]:
    """Every snapshot the scheduler publishes, as dicts, until the caller stops iterating.

    Raises TimeoutError when no snapshot comes within ``timeout`` seconds, MonitorError when
    the connection is refused or lost.
    """
    with Subscription(address, auth_key, timeout, tls_ca) as subscription:
        while True:
            yield subscription.next()


def snapshot(address: str, auth_key: Union[str, bytes, None] = None,
             timeout: float = DEFAULT_TIMEOUT_SECONDS, tls_ca: Optional[str] = None) -> Status:
    """One snapshot (the scheduler sends one as soon as a subscriber connects)."""
    with Subscription(address, auth_key, timeout, tls_ca) as subscription:
        return subscription.next()


def wait_for(address: str, predicate: Callable[[Status], Any], timeout: float = 30.0,
             auth_key: Union[str, bytes, None] = None, tls_ca: Optional[str] = None) -> Status:
    """The first snapshot for which ``predicate`` is true; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Optional[Status] = None
    while time.monotonic() < deadline:
        try:  # the scheduler may not listen yet, or restart: connect again until the deadline
            subscription = Subscription(address, auth_key, max(0.01, min(deadline - time.monotonic(),
                                                                         DEFAULT_TIMEOUT_SECONDS)), tls_ca)
        except MonitorError as exc:
            if _hopeless(str(exc)):
                raise
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            continue
        with subscription:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    last = subscription.next(remaining)
                except TimeoutError:
                    break
                except MonitorError:
                    break
                if predicate(last):
                    return last
    raise TimeoutError("no status from %s satisfied the condition within %.1fs%s"
                       % (address, timeout, "" if last is None else " (last: %d worker(s), tasks %s)"
                          % (len(last.get("workers", ())), last.get("tasks"))))


class Follower:
    """Follows a monitor address on a daemon thread, reconnecting whenever the link is lost.

    ``latest`` is the last snapshot (kept while disconnected), ``connected`` says whether
    the link is up and ``problem`` why not. ``on_status(status)`` is called on the thread
    for each snapshot. Used by ``scaler_top`` and the web dashboard.
    """

    def __init__(self, address: str, auth_key: Union[str, bytes, None] = None,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS, on_status: Optional[Callable[[Status], None]] = None,
                 retry_seconds: float = 1.0, tls_ca: Optional[str] = None) -> None:
        self.address = address
        self.auth_key = auth_key
        self.tls_ca = tls_ca
        self.timeout = timeout
        self.on_status = on_status
        self.retry_seconds = retry_seconds
        self.latest: Optional[Status] = None
        self.connected = False
        self.problem = "connecting"
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._subscription: Optional[Subscription] = None
        self._thread = threading.Thread(target=self._run, name="monitor-follower", daemon=True)

    def start(self) -> "Follower":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        subscription = self._subscription
        if subscription is not None:
            subscription.interrupt()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wait_newer(self, sequence: int, timeout: float) -> Optional[Status]:
        """The latest snapshot once its sequence differs from ``sequence``; None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                latest = self.latest
                if latest is not None and latest.get("sequence") != sequence:
                    return latest
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return None
                self.changed.wait(remaining)

    def _set(self, connected: bool, problem: str, status: Optional[Status] = None) -> None:
        with self.changed:
            self.connected = connected
            self.problem = problem
            if status is not None:
                self.latest = status
            self.changed.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            retry = self.retry_seconds
            try:
                self._subscription = Subscription(self.address, self.auth_key, self.timeout, self.tls_ca)
                try:
                    while not self._stop.is_set():
                        status = self._subscription.next()
                        self._set(True, "", status)
                        if self.on_status is not None:
                            self.on_status(status)
                finally:
                    self._subscription.close()
                    self._subscription = None
            except TimeoutError:
                self._set(False, "no status for %.0fs" % self.timeout)
            except MonitorError as exc:
                text = str(exc)
                if _hopeless(text):
                    retry = max(retry, 5.0)  # a wrong key, version or certificate: retrying soon cannot help
                self._set(False, text)
            except OSError as exc:
                self._set(False, str(exc))
            self._stop.wait(retry)
        with self.changed:
            self.changed.notify_all()


def _hopeless(text: str) -> bool:
    """The connection was refused for a reason retrying cannot fix (key, version, TLS)."""
    return any(words in text for words in ("refused by the server", "auth", "version", "TLS"))


__all__ = ["Follower", "MonitorError", "Subscription", "Status", "snapshot", "subscribe", "wait_for"]
