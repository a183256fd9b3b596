"""The scheduler: task state (``state``), its process (``server``) and ``Scheduler``."""

import dataclasses
import json
import signal
from typing import Any, Optional

from ..config.components import SchedulerConfig
from ..utility import process as proc_util


class Scheduler:
    """A scheduler in its own process: ``Scheduler(address="tcp://127.0.0.1:8516").start()``.

    Takes the fields of :class:`~scaler.config.components.SchedulerConfig` as keywords.
    """

    def __init__(self, config: Optional[SchedulerConfig] = None, **fields: Any) -> None:
        self.config = config if config is not None else SchedulerConfig(**fields)
        self._child: Optional[proc_util.Child] = None

    def start(self) -> None:
        key = self.config.auth_key or proc_util.auth_key_from_env()
        config = dataclasses.replace(self.config, auth_key=None)
        env = proc_util.child_environment({proc_util.AUTH_KEY_ENV: key} if key else None)
        self._child = proc_util.spawn("scheduler", "scheduler",
                                      ["--config-json", json.dumps(dataclasses.asdict(config))], env=env)

    @property
    def pid(self) -> Optional[int]:
        return self._child.pid if self._child else None

    def is_alive(self) -> bool:
        return self._child is not None and self._child.is_alive()

    def kill(self) -> None:
        if self._child is not None:
            self._child.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        if self._child is not None:
            self._child.send_signal(signal.SIGTERM)

    def join(self, timeout: Optional[float] = None) -> None:
        if self._child is not None:
            try:
                self._child.popen.wait(timeout)
            except Exception:
                pass

    def shutdown(self) -> None:
        if self._child is not None:
            self._child.stop(grace_seconds=10.0)
