"""``WebGUIConfig``: upstream's ``scaler_gui`` settings, and :func:`start_webgui` to serve
the dashboard from Python (the same server as ``scaler_gui``, ``scaler/gui``)."""

import dataclasses
import threading
from typing import Optional, Union

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


def start_webgui(config: WebGUIConfig, stop_event: Optional[threading.Event] = None) -> None:
    """Serve the web dashboard described by ``config`` in this process until Ctrl-C (or until
    ``stop_event`` is set). The key, if any, comes from ``SCALER_AUTH_KEY``, as for ``scaler_gui``."""
    from ...gui.server import listen_http, serve, stop
    from ...utility.process import auth_key_from_env
    from ..components import GuiConfig

    gui = GuiConfig(monitor_address=str(config.monitor_address),
                    gui_address="%s:%d" % (config.gui_address.host, config.gui_address.port),
                    broadcast_interval_seconds=config.broadcast_interval_seconds,
                    status_report_interval_seconds=config.status_report_interval_seconds,
                    tls_ca=config.security.tls_ca)
    gui.auth_key = auth_key_from_env()
    server, thread = serve(gui, listen_http(gui.gui_address))
    try:
        while thread.is_alive() and not (stop_event is not None and stop_event.is_set()):
            thread.join(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop(server, thread)
