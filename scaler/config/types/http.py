"""``HTTPConfig``: upstream's ``host:port`` of an HTTP server (the web GUI's ``gui_address``)."""

import dataclasses
from typing import Type, TypeVar

_T = TypeVar("_T", bound="HTTPConfig")


@dataclasses.dataclass
class HTTPConfig:
    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError("HTTPConfig.host must be a non-empty string, got %r" % (self.host,))
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError("HTTPConfig.port must be an integer from 1 to 65535, got %r" % (self.port,))

    @classmethod
    def from_string(cls: Type[_T], value: str) -> _T:
        """``"0.0.0.0:50001"`` (an IPv6 host is split on the last ``:``)."""
        host, sep, port = str(value).rpartition(":")
        if not sep:
            raise ValueError("expected HOST:PORT, got %r" % (value,))
        try:
            number = int(port)
        except ValueError:
            raise ValueError("expected HOST:PORT, port %r is not a number" % port) from None
        return cls(host.strip("[]"), number)

    def __str__(self) -> str:
        return "%s:%d" % (self.host, self.port)
