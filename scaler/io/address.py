"""Parsing and opening ``tcp://host:port``, ``tls://host:port`` and ``ipc://path`` addresses.

A ``tls://`` address is a TCP address whose connections are wrapped in TLS
(``scaler.io.tls``); binding and connecting the socket is the same as for ``tcp://``.
"""

import os
import socket
from typing import Optional, Sequence, Tuple

SCHEMES = ("tcp", "tls", "ipc")
TCP_SCHEMES = ("tcp", "tls")


class Address:
    """An immutable, hashable address (written out rather than a frozen dataclass: ``dataclasses``
    imports ``inspect``, a few ms that ``import scaler`` does without)."""

    __slots__ = ("scheme", "host", "port", "path")
    scheme: str
    host: str
    port: int
    path: str

    def __init__(self, scheme: str, host: str = "", port: int = 0, path: str = "") -> None:
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "path", path)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("cannot assign to field %r: an Address is immutable (use _replace)" % name)

    def __delattr__(self, name: str) -> None:
        raise AttributeError("cannot delete field %r: an Address is immutable" % name)

    def _fields(self) -> Tuple[str, str, int, str]:
        return (self.scheme, self.host, self.port, self.path)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "Address(scheme=%r, host=%r, port=%r, path=%r)" % self._fields()

    def __reduce__(self) -> Tuple[type, Tuple[str, str, int, str]]:
        return (Address, self._fields())

    def _replace(self, **changes: object) -> "Address":
        values = dict(zip(self.__slots__, self._fields()))
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError("Address has no field %s" % ", ".join(sorted(unknown)))
        values.update(changes)
        return Address(**values)  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self.scheme == "ipc":
            return "ipc://%s" % self.path
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % (self.scheme, host, self.port)

    @property
    def is_tls(self) -> bool:
        return self.scheme == "tls"

    def with_port_offset(self, offset: int) -> "Address":
        """The address ``offset`` ports further on (ipc: a sibling socket path)."""
        if self.scheme == "ipc":
            return self._replace(path="%s.%d" % (self.path, offset))
        port = self.port + offset
        if not 0 < port < 65536:
            raise ValueError("%s + %d is not a valid port" % (self, offset))
        return self._replace(port=port)


def parse_address(text: str) -> Address:
    """Parse an address; raise ValueError with a message that says what is wrong."""
    if not isinstance(text, str):
        raise ValueError("address must be a string like tcp://127.0.0.1:8516, got %r" % (text,))
    if "://" not in text:
        raise ValueError("address %r has no scheme: expected tcp://HOST:PORT, tls://HOST:PORT or ipc://PATH" % text)
    scheme, rest = text.split("://", 1)
    if scheme not in SCHEMES:
        raise ValueError("address %r: unsupported scheme %r (supported: tcp, tls, ipc)" % (text, scheme))
    if scheme == "ipc":
        if not rest:
            raise ValueError("address %r: ipc:// needs a socket path" % text)
        return Address("ipc", path=rest)
    if rest.startswith("["):
        host, sep, port_text = rest[1:].partition("]:")
    else:
        host, sep, port_text = rest.rpartition(":")
    if not sep or not host:
        raise ValueError("address %r: expected %s://HOST:PORT" % (text, scheme))
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError("address %r: port %r is not a number" % (text, port_text)) from None
    if not 0 < port < 65536:
        raise ValueError("address %r: port %d is out of range 1-65535" % (text, port))
    if host == "*":
        host = "0.0.0.0"
    return Address(scheme, host=host, port=port)


def _family(address: Address) -> int:
    if address.scheme == "ipc":
        return socket.AF_UNIX
    return socket.AF_INET6 if ":" in address.host else socket.AF_INET


def listen(address: Address, backlog: int = 1024) -> socket.socket:
    """Bind and listen; raise OSError with the address in the message."""
    sock = socket.socket(_family(address), socket.SOCK_STREAM)
    try:
        if address.scheme == "ipc":
            if os.path.exists(address.path) and not _is_live_unix_socket(address.path):
                os.unlink(address.path)  # a stale socket file from a previous run
            sock.bind(address.path)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address.host, address.port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, "cannot listen on %s: %s" % (address, exc.strerror)) from None
    sock.setblocking(False)
    return sock


def _is_live_unix_socket(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def connect_nonblocking(address: Address) -> socket.socket:
    """Start a non-blocking connect; completion is seen as writability."""
    sock = socket.socket(_family(address), socket.SOCK_STREAM)
    sock.setblocking(False)
    target = address.path if address.scheme == "ipc" else (address.host, address.port)
    err = sock.connect_ex(target)
    if err not in (0, 115, 36, 11, 10035):  # EINPROGRESS (Linux, macOS), EAGAIN (unix sockets), WSAEWOULDBLOCK
        sock.close()
        raise ConnectionRefusedError(err, "cannot connect to %s: %s" % (address, os.strerror(err)))
    return sock


def tune(sock: socket.socket) -> None:
    """Low latency for small frames; big kernel buffers for big ones."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, 4 * 1024 * 1024)
        except OSError:
            pass


def connectable_host(address: Address) -> Address:
    """A listen address of 0.0.0.0 / :: is reached locally on loopback."""
    if address.scheme in TCP_SCHEMES and address.host in ("0.0.0.0", "::", ""):
        return address._replace(host="127.0.0.1" if address.host != "::" else "::1")
    return address


def is_loopback(address: Address) -> bool:
    """Only this machine can connect: a Unix socket, localhost, 127.0.0.0/8 or ::1.

    A host name counts as loopback only if every address it resolves to is one; ``0.0.0.0``,
    ``::`` (every interface) and names that do not resolve do not.
    """
    if address.scheme == "ipc":
        return True
    host = address.host
    if host == "localhost":
        return True
    import ipaddress
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    try:
        return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]).is_loopback
                                   for info in infos)
    except ValueError:
        return False


def exposure_warning(what: str, addresses: "Sequence[Address]", key: Optional[bytes]) -> Optional[str]:
    """The one warning a server without an auth key logs when it listens beyond loopback (else None)."""
    if key is not None:
        return None
    exposed = [str(address) for address in addresses if not is_loopback(address)]
    if not exposed:
        return None
    return ("%s listening on %s with no auth key: anyone who can connect can run code on the workers; set "
            "--auth-key-file (see docs/security.rst)" % (what, " and ".join(exposed)))


def _ephemeral_range() -> Tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(part) for part in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_tcp_port(host: str = "127.0.0.1", count: int = 1) -> int:
    """A port P such that P .. P + count - 1 were all free a moment ago.

    Chosen below the kernel's ephemeral range: a port the kernel hands out for outgoing
    connections could be taken by any client between this check and the listener's bind
    (the scheduler also listens on P + 1 for its object storage server).
    """
    low, _ = _ephemeral_range()
    top = low - count if low > 20000 + count else 65535 - count
    bottom = 20000 if top > 21000 else 1024
    import random
    for _ in range(500):
        port = random.randint(bottom, top)
        socks = []
        try:
            for offset in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((host, port + offset))
            return port
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no run of %d free ports found on %s" % (count, host))
