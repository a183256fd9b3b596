"""``WorkerCapabilities`` and ``WorkerNames``: upstream's parsed forms of ``"linux,gpu=2"`` and
``"a,b,c"``, checked by scaler's own parsers (``scaler.config.capabilities``)."""

import dataclasses
from typing import Dict, List, Type, TypeVar

from ..capabilities import format_capabilities, parse_capabilities

_C = TypeVar("_C", bound="WorkerCapabilities")
_N = TypeVar("_N", bound="WorkerNames")


@dataclasses.dataclass
class WorkerCapabilities:
    """``{"linux": -1, "gpu": 2}``: a name alone (-1) says the capability is there."""

    capabilities: Dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        format_capabilities(self.capabilities)  # CapabilitiesError (a ValueError) for a bad name or quantity

    @classmethod
    def from_string(cls: Type[_C], value: str) -> _C:
        return cls(parse_capabilities(value))

    def to_text(self) -> str:
        """The canonical text, as workers advertise it: ``"linux,gpu=2"``."""
        return format_capabilities(self.capabilities)

    def __str__(self) -> str:
        return self.to_text() or "<empty>"


@dataclasses.dataclass
class WorkerNames:
    """Worker names, one per worker."""

    names: List[str] = dataclasses.field(default_factory=list)

    @classmethod
    def from_string(cls: Type[_N], value: str) -> _N:
        if not value:
            return cls([])
        return cls([name.strip() for name in value.split(",")])

    def __str__(self) -> str:
        return ",".join(self.names) if self.names else "<empty>"

    def __len__(self) -> int:
        return len(self.names)
