"""``NativeWorkerManagerConfig``: upstream's ``scaler_worker_manager baremetal_native`` settings,
a face over ``components.WorkerManagerConfig`` (checked by that command's own validation)."""

import dataclasses
import enum
from typing import Any, Optional, Union

from .. import components
from ..common.logging import LoggingConfig
from ..common.security import SecurityConfig
from ..common.worker import WorkerConfig
from ..common.worker_manager import WorkerManagerConfig
from ..faces import build_checked
from ..types.address import AddressConfig


class NativeWorkerManagerMode(enum.Enum):
    DYNAMIC = "dynamic"
    FIXED = "fixed"


@dataclasses.dataclass
class NativeWorkerManagerConfig:
    worker_manager_config: WorkerManagerConfig
    worker_config: WorkerConfig = dataclasses.field(default_factory=WorkerConfig)
    logging_config: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
    security: SecurityConfig = dataclasses.field(default_factory=SecurityConfig)
    mode: Union[NativeWorkerManagerMode, str] = NativeWorkerManagerMode(
        components.WorkerManagerConfig.__dataclass_fields__["mode"].default)
    worker_type: Optional[str] = None

    def __post_init__(self) -> None:
        if isinstance(self.mode, str):
            try:
                self.mode = NativeWorkerManagerMode(self.mode.strip().lower())
            except ValueError:
                raise ValueError("NativeWorkerManagerConfig.mode: expected dynamic or fixed, got %r"
                                 % self.mode) from None
        if not isinstance(self.mode, NativeWorkerManagerMode):
            raise TypeError("NativeWorkerManagerConfig.mode must be a NativeWorkerManagerMode, got %r" % (self.mode,))
        self.to_scaler()  # every value checked now, as the command line would check it

    def to_scaler(self) -> components.WorkerManagerConfig:
        """scaler's own configuration of this worker manager (what its process runs)."""
        values = dict(self.worker_manager_config.scaler_fields())
        values.update(self.worker_config.scaler_fields())
        values.update(self.logging_config.scaler_fields())
        values["tls_ca"] = self.security.tls_ca  # a manager and its workers only connect: the CA is what counts
        values["mode"] = NativeWorkerManagerMode(self.mode).value
        values["worker_type"] = self.worker_type or ""
        from ..commands import WORKER_MANAGER_BAREMETAL
        return build_checked(WORKER_MANAGER_BAREMETAL, values, "NativeWorkerManagerConfig")

    @classmethod
    def from_scaler(cls, config: components.WorkerManagerConfig) -> "NativeWorkerManagerConfig":
        """The face of one of scaler's worker manager configurations."""
        optional = {name: AddressConfig.from_string(getattr(config, name)) if getattr(config, name) else None
                    for name in ("worker_scheduler_address", "object_storage_address")}
        return cls(
            worker_manager_config=WorkerManagerConfig(
                scheduler_address=AddressConfig.from_string(config.scheduler_address),
                worker_manager_id=config.worker_manager_id, max_task_concurrency=config.max_task_concurrency,
                **optional),
            worker_config=WorkerConfig.from_scaler(config),
            logging_config=LoggingConfig(paths=tuple(config.logging_paths), config_file=config.logging_config_file,
                                         level=config.logging_level),
            security=SecurityConfig(tls_ca=config.tls_ca),
            mode=NativeWorkerManagerMode(config.mode), worker_type=config.worker_type or None)




__all__ = ["NativeWorkerManagerConfig", "NativeWorkerManagerMode", "WorkerManagerConfig", "WorkerConfig",
           "LoggingConfig", "SecurityConfig"]
