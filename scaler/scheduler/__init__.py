"""The scheduler: task state (``state``), its process (``server``) and ``Scheduler``."""

from typing import Any, Optional

from ..config.components import SchedulerConfig
from ..utility import process as proc_util


class Scheduler(proc_util.ProcessHandle):
    """A scheduler in its own process: ``Scheduler(address="tcp://127.0.0.1:8516").start()``.

    Takes the fields of :class:`~scaler.config.components.SchedulerConfig` as keywords.
    """

    def __init__(self, config: Optional[SchedulerConfig] = None, **fields: Any) -> None:
        if config is not None and not isinstance(config, SchedulerConfig) and hasattr(config, "to_scaler"):
            config = config.to_scaler()  # upstream's scaler.config.section.scheduler.SchedulerConfig
        self.config = config if config is not None else SchedulerConfig(**fields)
        self._child: Optional[proc_util.Child] = None

    def start(self) -> None:
        key = self.config.auth_key or proc_util.auth_key_from_env()
        self._child = proc_util.spawn_component("scheduler", "scheduler", self.config, auth_key=key)
