"""``SchedulerConfig`` and ``PolicyConfig``: upstream's scheduler settings, faces over
``components.SchedulerConfig`` (checked by ``scaler_scheduler``'s own validation)."""

import dataclasses
from typing import Any, Dict, Optional, Union

from .. import components
from ..common.logging import LoggingConfig
from ..common.security import SecurityConfig
from ..faces import address_text, build_checked, check_values, default_of
from ..types.address import AddressConfig

_D = components.SchedulerConfig
AddressLike = Union[AddressConfig, str]


@dataclasses.dataclass
class PolicyConfig:
    """The scheduler's policy: ``policy_content`` like ``"allocate=even_load; scaling=vanilla"``.

    Defaults are scaler's (``allocate=even_load; scaling=no``, as its users' documentation
    says). Only the ``simple`` engine exists in this build: ``waterfall_v1`` is refused when a
    scheduler would use it.
    """

    policy_engine_type: str = default_of(_D, "policy_engine_type")
    policy_content: str = default_of(_D, "policy_content")

    def __post_init__(self) -> None:
        checked = check_values(_D, self.scaler_fields(), "PolicyConfig")
        self.policy_engine_type = checked["policy_engine_type"]

    def scaler_fields(self) -> Dict[str, Any]:
        return {"policy_engine_type": self.policy_engine_type, "policy_content": self.policy_content}

    def __str__(self) -> str:
        return self.policy_content


@dataclasses.dataclass
class SchedulerConfig:
    bind_address: AddressLike
    object_storage_address: Optional[AddressLike] = None  # None: hosted by the scheduler on port + 1
    advertised_object_storage_address: Optional[AddressLike] = None
    monitor_address: Optional[AddressLike] = None
    status_report_interval_seconds: float = default_of(_D, "status_report_interval_seconds")
    protected: bool = default_of(_D, "protected")
    max_number_of_tasks_waiting: int = default_of(_D, "max_number_of_tasks_waiting")
    client_timeout_seconds: float = default_of(_D, "client_timeout_seconds")
    worker_timeout_seconds: float = default_of(_D, "worker_timeout_seconds")
    object_retention_seconds: float = default_of(_D, "object_retention_seconds")
    load_balance_seconds: float = default_of(_D, "load_balance_seconds")
    load_balance_trigger_times: int = default_of(_D, "load_balance_trigger_times")
    event_loop: str = default_of(_D, "event_loop")
    io_threads: int = default_of(_D, "io_threads")
    logging_config: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    security: SecurityConfig = dataclasses.field(default_factory=SecurityConfig)

    def __post_init__(self) -> None:
        for name in ("bind_address", "object_storage_address", "advertised_object_storage_address",
                     "monitor_address"):
            value = getattr(self, name)
            address_text(value, "SchedulerConfig", name, optional=name != "bind_address")
            if isinstance(value, str):
                setattr(self, name, AddressConfig.from_string(value))
        self.to_scaler()

    def to_scaler(self) -> components.SchedulerConfig:
        """scaler's own configuration of this scheduler (what ``scaler.Scheduler`` runs)."""
        values: Dict[str, Any] = {
            name: getattr(self, name) for name in (
                "status_report_interval_seconds", "protected", "max_number_of_tasks_waiting",
                "client_timeout_seconds", "worker_timeout_seconds", "object_retention_seconds",
                "load_balance_seconds", "load_balance_trigger_times", "event_loop", "io_threads")}
        values["address"] = str(self.bind_address)
        for name in ("object_storage_address", "advertised_object_storage_address", "monitor_address"):
            value = getattr(self, name)
            values[name] = None if value is None else str(value)
        values.update(self.logging_config.scaler_fields())
        values.update(self.policy.scaler_fields())
        values.update(self.security.scaler_fields())
        from ..commands import SCHEDULER
        return build_checked(SCHEDULER, values, "SchedulerConfig")
