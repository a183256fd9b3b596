"""``AddressConfig``: upstream's parsed ``tcp://host:port`` / ``tls://host:port`` / ``ipc://path``, checked by
scaler's parser."""

import dataclasses
import enum
from typing import Optional, Set, Type, TypeVar

_T = TypeVar("_T", bound="AddressConfig")


class SocketType(enum.Enum):
    inproc = "inproc"
    ipc = "ipc"
    tcp = "tcp"
    tls = "tls"
    ws = "ws"
    wss = "wss"

    @staticmethod
    def allowed_types() -> Set[str]:
        return {t.value for t in SocketType}


_SUPPORTED = (SocketType.tcp, SocketType.tls, SocketType.ipc)  # what this build's transport speaks (scaler.io.address)


@dataclasses.dataclass
class AddressConfig:
    """An address: ``type`` (a ``SocketType``), ``host`` (for ipc: the socket path) and ``port``.

    ``str()`` gives the address text. Only ``tcp``, ``tls`` and ``ipc`` are available in this build:
    ``inproc``, ``ws`` and ``wss`` (upstream's other transports) are refused with ValueError.
    """

    type: SocketType
    host: str
    port: Optional[int] = None

    def __post_init__(self) -> None:
        from ...io.address import parse_address

        if not isinstance(self.type, SocketType):
            raise TypeError("Invalid socket type %r, available types are: %s"
                            % (self.type, sorted(SocketType.allowed_types())))
        if self.type not in _SUPPORTED:
            raise ValueError("socket type %s is not available in this build: use tcp://, tls:// or ipc://"
                             % self.type.value)
        if not isinstance(self.host, str):
            raise TypeError("Host should be string, given %r" % (self.host,))
        if self.type is SocketType.ipc:
            if self.port is not None:
                raise ValueError("type ipc should not have `port`")
        else:
            if self.port is None:
                raise ValueError("type %s should have `port`" % self.type.value)
            if isinstance(self.port, bool) or not isinstance(self.port, int):
                raise TypeError("Port should be integer, given %r" % (self.port,))
        parse_address(str(self))  # the one parser: an empty host or a port out of range is refused here

    @classmethod
    def from_string(cls: Type[_T], value: str) -> _T:
        """``AddressConfig.from_string("tcp://127.0.0.1:8516")``; ValueError for a bad address."""
        from ...io.address import parse_address

        if isinstance(value, str) and "://" in value and value.split("://", 1)[0] in SocketType.allowed_types():
            scheme = SocketType(value.split("://", 1)[0])
            if scheme not in _SUPPORTED:
                raise ValueError("socket type %s is not available in this build: use tcp://, tls:// or ipc://"
                                 % scheme.value)
        address = parse_address(value)
        if address.scheme == "ipc":
            return cls(SocketType.ipc, address.path)
        return cls(SocketType(address.scheme), address.host, address.port)

    def __repr__(self) -> str:
        if self.type is SocketType.ipc:
            return "ipc://%s" % self.host
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%s" % (self.type.value, host, self.port)

    __str__ = __repr__
