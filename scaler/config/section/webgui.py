"""``WebGUIConfig``: upstream's ``scaler_gui`` settings.

The web GUI is not part of this build yet: the configuration is accepted and checked, and
:func:`start_webgui` says so with ``NotImplementedError``.
"""

import dataclasses
from typing import Union

from ..common.logging import LoggingConfig
from ..common.security import SecurityConfig
from ..faces import address_text
from ..types.address import AddressConfig
from ..types.http import HTTPConfig


@dataclasses.dataclass
class WebGUIConfig:
    monitor_address: Union[AddressConfig, str]
    gui_address: Union[HTTPConfig, str] = dataclasses.field(default_factory=lambda: HTTPConfig("0.0.0.0", 50001))
    broadcast_interval_seconds: float = 0.5
    task_log_max_size: int = 500
    worker_display_limit: int = -1
    status_report_interval_seconds: float = 1
    logging_config: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
    security: SecurityConfig = dataclasses.field(default_factory=SecurityConfig)

    def __post_init__(self) -> None:
        address_text(self.monitor_address, "WebGUIConfig", "monitor_address", optional=False)
        if isinstance(self.monitor_address, str):
            self.monitor_address = AddressConfig.from_string(self.monitor_address)
        if isinstance(self.gui_address, str):
            self.gui_address = HTTPConfig.from_string(self.gui_address)
        if self.broadcast_interval_seconds <= 0:
            raise ValueError("broadcast_interval_seconds must be positive.")
        if self.task_log_max_size <= 0:
            raise ValueError("task_log_max_size must be positive.")
        if self.worker_display_limit == 0 or self.worker_display_limit < -1:
            raise ValueError("worker_display_limit must be -1 (unlimited) or a positive integer.")
        if self.status_report_interval_seconds <= 0:
            raise ValueError("status_report_interval_seconds must be positive.")


def start_webgui(config: WebGUIConfig) -> None:
    """Would serve the web GUI described by ``config``: not available in this build yet."""
    raise NotImplementedError("the web GUI (scaler_gui) is not part of this build yet; the status of a scheduler is "
                              "published on its monitor address (%s)" % config.monitor_address)
