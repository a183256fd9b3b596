"""``WorkerManagerConfig``: upstream's where-and-how-many of a worker manager, a face over
the same fields of ``components.WorkerManagerConfig``."""

import dataclasses
from typing import Any, Dict, Optional, Union

from .. import components
from ..faces import address_text, check_values, default_of
from ..types.address import AddressConfig

_D = components.WorkerManagerConfig
AddressLike = Union[AddressConfig, str]


@dataclasses.dataclass
class WorkerManagerConfig:
    """``worker_manager_id`` may be left empty: the manager then names itself
    ``NAT|<host>-<pid>`` or ``FIX|<host>-<pid>`` (upstream requires one)."""

    scheduler_address: AddressLike
    worker_manager_id: str = default_of(_D, "worker_manager_id")
    worker_scheduler_address: Optional[AddressLike] = None
    object_storage_address: Optional[AddressLike] = None
    max_task_concurrency: int = dataclasses.field(default_factory=lambda: default_of(_D, "max_task_concurrency"))

    def __post_init__(self) -> None:
        for name in ("scheduler_address", "worker_scheduler_address", "object_storage_address"):
            value = getattr(self, name)
            address_text(value, "WorkerManagerConfig", name, optional=name != "scheduler_address")
            if isinstance(value, str):
                setattr(self, name, AddressConfig.from_string(value))
        check_values(_D, {"worker_manager_id": self.worker_manager_id,
                          "max_task_concurrency": self.max_task_concurrency}, "WorkerManagerConfig")

    @property
    def effective_worker_scheduler_address(self) -> AddressLike:
        return self.worker_scheduler_address if self.worker_scheduler_address is not None else self.scheduler_address

    def scaler_fields(self) -> Dict[str, Any]:
        return {"scheduler_address": str(self.scheduler_address), "worker_manager_id": self.worker_manager_id,
                "worker_scheduler_address": _text(self.worker_scheduler_address),
                "object_storage_address": _text(self.object_storage_address),
                "max_task_concurrency": self.max_task_concurrency}


def _text(address: Optional[AddressLike]) -> Optional[str]:
    return None if address is None else str(address)
