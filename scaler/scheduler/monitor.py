"""The scheduler's monitor address: status snapshots pushed to any number of subscribers.

Subscribers (``scaler_top``, the web dashboard, ``scaler.monitor``) connect with the
monitor role and the same handshake (and auth key) as every other peer, then only listen:
the first snapshot goes out as soon as the handshake completes, then one every
``status_report_interval_seconds``. The snapshot is built once per period, and only while
someone listens.

A subscriber never slows the scheduler nor grows its memory: one whose previous snapshot
is still in its write buffer (it stopped reading and the kernel buffers are full) skips
the new one, so at most one snapshot waits per subscriber; one that has skipped
``MAX_SKIPPED`` in a row is dropped. Subscribers may send only heartbeats (echoed), in
frames of at most ``SUBSCRIBER_FRAME_LIMIT`` bytes.
"""

import errno
import json
import logging
import socket
import time
from typing import Any, Callable, Dict, Optional

from ..io.address import Address, listen, parse_address
from ..io.connection import Connection, Handler, Listener
from ..io.loop import EventLoop
from ..protocol.codec import Message
from ..protocol.messages import ROLE_MONITOR, Heartbeat, HeartbeatEcho, StatusSnapshot

logger = logging.getLogger(__name__)

MAX_SUBSCRIBERS = 256
MAX_SKIPPED = 30  # snapshots a stalled subscriber may miss in a row before it is dropped
# The kernel's send buffer of a subscriber connection: fixed (no autotuning to megabytes), so
# a subscriber that stops reading costs at most this plus one snapshot, and is noticed soon.
SUBSCRIBER_SEND_BUFFER = 256 * 1024
SUBSCRIBER_FRAME_LIMIT = 64 * 1024


def monitor_address_of(config: Any) -> Address:
    """The configured monitor address, or the scheduler's address port + 2."""
    if config.monitor_address:
        return parse_address(config.monitor_address)
    return parse_address(config.address).with_port_offset(2)


def open_monitor_socket(config: Any) -> Optional[socket.socket]:
    """Bind the monitor address. An explicit address that cannot be bound raises OSError; the
    default one (port + 2) is only warned about: the scheduler then runs without a monitor."""
    try:
        address = monitor_address_of(config)
    except ValueError as exc:
        logger.warning("no monitor: %s", exc)
        return None
    try:
        return listen(address)
    except OSError as exc:
        if config.monitor_address or exc.errno not in (errno.EADDRINUSE, errno.EACCES):
            raise
        logger.warning("no monitor: %s (give --monitor-address to choose another address)", exc.strerror or exc)
        return None


class _Subscriber:
    __slots__ = ("skipped", "sequence")

    def __init__(self) -> None:
        self.skipped = 0
        self.sequence = 0  # of the last snapshot sent to it


class MonitorServer(Handler):
    """Publishes ``build()`` (a JSON-ready dict) to every subscriber every ``interval`` seconds.

    ``tick()`` is also called every period whether or not anyone listens (the scheduler
    keeps its rates current with it).
    """

    def __init__(self, loop: EventLoop, sock: socket.socket, address: str, auth_key: Optional[bytes],
                 build: Callable[[], Dict[str, Any]], interval: float,
                 tick: Optional[Callable[[], None]] = None, tls: Any = None) -> None:
        self.loop = loop
        self.address = address
        self.build = build
        self.interval = interval
        self._tick = tick
        self.subscribers: Dict[Connection, _Subscriber] = {}
        self.sequence = 0
        self._latest: Optional[Message] = None
        self._latest_at = 0.0
        self.listener = Listener(loop, sock, self, address=address, auth_key=auth_key,
                                 allowed_roles=(ROLE_MONITOR,), max_frame_bytes=SUBSCRIBER_FRAME_LIMIT, tls=tls)
        self._timer = loop.call_every(interval, self.publish)

    def _snapshot(self, fresh: bool = False) -> Message:
        """The latest snapshot; built anew when ``fresh`` or when it is a period old."""
        now = time.monotonic()
        if fresh or self._latest is None or now - self._latest_at >= self.interval:
            self.sequence += 1
            payload = json.dumps(self.build(), separators=(",", ":")).encode("utf-8")
            self._latest = StatusSnapshot(self.sequence, time.time(), payload)
            self._latest_at = now
        return self._latest

    def publish(self) -> None:
        if self._tick is not None:
            self._tick()
        if not self.subscribers:
            self._latest = None
            return
        msg = self._snapshot(fresh=True)
        for conn, subscriber in list(self.subscribers.items()):
            if conn.write_backlog > 0:  # the previous one has not left yet: this one is skipped
                subscriber.skipped += 1
                if subscriber.skipped >= MAX_SKIPPED:
                    logger.info("dropping monitor subscriber %s: it stopped reading", conn.peer)
                    conn.close("monitor subscriber too slow")
                continue
            subscriber.skipped = 0
            subscriber.sequence = msg.sequence
            conn.send(msg)

    # --- Handler ---
    def connection_open(self, conn: Connection) -> None:
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            logger.warning("refused monitor subscriber %s: already %d subscribers", conn.peer, MAX_SUBSCRIBERS)
            conn.close("too many monitor subscribers")
            return
        try:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SUBSCRIBER_SEND_BUFFER)
        except OSError:
            pass
        subscriber = self.subscribers[conn] = _Subscriber()
        msg = self._snapshot()
        subscriber.sequence = msg.sequence
        conn.send(msg)

    def message_received(self, conn: Connection, msg: Message) -> None:
        if type(msg) is Heartbeat:
            conn.send(HeartbeatEcho(msg.sent_at))
        else:
            conn.close("unexpected %s from a monitor subscriber" % type(msg).__name__)

    def connection_closed(self, conn: Connection, reason: str) -> None:
        self.subscribers.pop(conn, None)

    def close(self) -> None:
        self._timer.cancel()
        for conn in list(self.subscribers):
            conn.close("scheduler stopping")
        self.listener.close()
