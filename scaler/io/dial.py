"""Connect and authenticate over a blocking socket, within one timeout.

For the peers that have nothing else to do while they connect: a monitor subscription
(``scaler.monitor``) and a worker's processor joining its scheduler. Everything else dials
through the event loop (``Connection.dial``).
"""

import socket
import time
from typing import Any, Optional

from ..protocol.codec import Message, ProtocolError, encode
from ..protocol.framing import FrameReader
from ..protocol.handshake import HANDSHAKE_FRAME_LIMIT, ConnectorHandshake
from .address import Address, tune


class DialError(ConnectionError):
    """The peer cannot be reached, or refused the handshake; the reason is user-facing."""


def dial(address: Address, role: int, key: Optional[bytes], tls_ca: Optional[str], timeout: float,
         reader: FrameReader, what: str) -> Any:
    """A socket connected to ``address`` (``connectable_host`` already applied), wrapped in TLS
    for tls://, with the handshake done as ``role``: all within ``timeout`` seconds. Frames that
    came behind the handshake stay in ``reader`` (its limit is the handshake's meanwhile).
    ``what`` names the peer in errors ("the monitor at tcp://..."). The socket is left with
    ``timeout`` set; raises :class:`DialError` (ValueError for a bad CA file)."""
    context = None
    if address.is_tls:
        from .tls import client_context
        context = client_context(tls_ca)
    if address.scheme == "ipc":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        endpoint: Any = address.path
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in address.host else socket.AF_INET, socket.SOCK_STREAM)
        endpoint = (address.host, address.port)
    tune(sock)
    deadline = time.monotonic() + timeout
    limit, reader.limit = reader.limit, HANDSHAKE_FRAME_LIMIT
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(endpoint)
        except OSError as exc:
            raise DialError("cannot connect to %s: %s" % (what, exc.strerror or exc)) from None
        if context is not None:
            try:  # the wrapper takes the descriptor over and shakes hands, within the timeout
                sock = context.wrap_socket(sock, server_hostname=address.host)
            except (OSError, ValueError) as exc:
                from .tls import handshake_failure
                raise DialError("%s: %s" % (what, handshake_failure(exc, str(address), False))) from None
        handshake = ConnectorHandshake(role, key)
        sock.sendall(encode(handshake.start()))
        while True:
            step = handshake.receive(receive(sock, reader, deadline, what))
            if step.reply is not None:
                sock.sendall(encode(step.reply))
            if step.failure is not None:
                raise DialError("%s: %s" % (what, step.failure))
            if step.done:
                break
    except BaseException:
        sock.close()
        raise
    finally:
        reader.limit = limit
    sock.settimeout(timeout)
    return sock


def receive(sock: Any, reader: FrameReader, deadline: float, what: str) -> Message:
    """The next message from a blocking socket, by ``deadline`` (TimeoutError after it);
    DialError when the peer sent something malformed or is gone."""
    while True:
        try:
            msg = reader.next_message()
        except ProtocolError as exc:
            raise DialError("malformed data from %s: %s" % (what, exc)) from None
        if msg is not None:
            return msg
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer from %s in time" % what)
        sock.settimeout(remaining)
        try:
            data = sock.recv(256 * 1024)
        except socket.timeout:
            continue
        except OSError as exc:
            raise DialError("lost %s: %s" % (what, exc.strerror or exc)) from None
        if not data:
            raise DialError("%s closed the connection (stopped?)" % what)
        reader.feed(data)


__all__ = ["DialError", "dial", "receive"]
