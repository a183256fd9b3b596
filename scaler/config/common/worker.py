"""``WorkerConfig``: upstream's per-worker settings, a face over ``components.WorkerSettings``."""

import dataclasses
from typing import Any, Dict, Optional, Union

from ..components import WorkerSettings
from ..faces import check_values, default_of
from ..types.worker import WorkerCapabilities

_D = WorkerSettings


@dataclasses.dataclass
class WorkerConfig:
    per_worker_capabilities: WorkerCapabilities = dataclasses.field(default_factory=WorkerCapabilities)
    per_worker_task_queue_size: int = default_of(_D, "per_worker_task_queue_size")
    heartbeat_interval_seconds: float = default_of(_D, "heartbeat_interval_seconds")
    task_timeout_seconds: float = default_of(_D, "task_timeout_seconds")
    death_timeout_seconds: float = default_of(_D, "death_timeout_seconds")
    garbage_collect_interval_seconds: float = default_of(_D, "garbage_collect_interval_seconds")
    trim_memory_threshold_bytes: int = default_of(_D, "trim_memory_threshold_bytes")
    hard_processor_suspend: bool = default_of(_D, "hard_processor_suspend")
    io_threads: int = default_of(_D, "io_threads")
    event_loop: str = default_of(_D, "event_loop")
    preload: Optional[str] = default_of(_D, "preload")

    def __post_init__(self) -> None:
        self.per_worker_capabilities = _capabilities(self.per_worker_capabilities)
        checked = check_values(_D, self.scaler_fields(), "WorkerConfig")
        for name in _FIELDS:
            setattr(self, name, checked[name])

    def scaler_fields(self) -> Dict[str, Any]:
        """These settings under scaler's field names (capabilities as their text)."""
        values: Dict[str, Any] = {name: getattr(self, name) for name in _FIELDS}
        values["per_worker_capabilities"] = _capabilities(self.per_worker_capabilities).to_text()
        return values

    @classmethod
    def from_scaler(cls, config: Any) -> "WorkerConfig":
        """The face of any of scaler's configs that holds worker settings."""
        values = {name: getattr(config, name) for name in _FIELDS}
        values["per_worker_capabilities"] = WorkerCapabilities.from_string(config.per_worker_capabilities)
        return cls(**values)


_FIELDS = [f.name for f in dataclasses.fields(WorkerConfig) if f.name != "per_worker_capabilities"]


def _capabilities(value: Union[WorkerCapabilities, Dict[str, int], str]) -> WorkerCapabilities:
    if isinstance(value, WorkerCapabilities):
        return value
    if isinstance(value, str):
        return WorkerCapabilities.from_string(value)
    return WorkerCapabilities(dict(value))
