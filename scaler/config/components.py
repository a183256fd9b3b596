"""The settings of each component, with upstream's defaults.

Each component is built from one of these dataclasses, whether it is started from the
command line, a TOML file or Python (``SchedulerClusterCombo``).
"""

import dataclasses
import os
from typing import Optional, Tuple

DEFAULT_PORT = 8516


def default_worker_count() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


@dataclasses.dataclass
class LoggingSettings:
    logging_level: str = "INFO"
    logging_paths: Tuple[str, ...] = ("/dev/stdout",)
    logging_config_file: Optional[str] = None


@dataclasses.dataclass
class SchedulerConfig(LoggingSettings):
    address: str = ""
    object_storage_address: Optional[str] = None  # None: host one in-process on port + 1
    monitor_address: Optional[str] = None
    protected: bool = True
    client_timeout_seconds: float = 60
    worker_timeout_seconds: float = 60
    max_task_retries: int = 3
    per_worker_queue_size: int = 1000
    object_storage_max_bytes: int = 0
    policy_content: str = "allocate=even_load; scaling=no"
    adapter_webhook_urls: Tuple[str, ...] = ()
    auth_key: Optional[str] = None


@dataclasses.dataclass
class ObjectStorageConfig(LoggingSettings):
    address: str = ""
    max_bytes: int = 0
    auth_key: Optional[str] = None


@dataclasses.dataclass
class WorkerSettings:
    """What every worker started by a cluster or a worker manager is given."""

    per_worker_capabilities: str = ""
    per_worker_task_queue_size: int = 1000
    heartbeat_interval_seconds: float = 2
    task_timeout_seconds: float = 0
    death_timeout_seconds: float = 300
    garbage_collect_interval_seconds: float = 30
    trim_memory_threshold_bytes: int = 1073741824
    hard_processor_suspend: bool = False
    io_threads: int = 1
    preload: Optional[str] = None
    object_storage_address: Optional[str] = None


@dataclasses.dataclass
class WorkerConfig(WorkerSettings, LoggingSettings):
    scheduler_address: str = ""
    name: str = ""
    manager_id: str = ""
    auth_key: Optional[str] = None


@dataclasses.dataclass
class ClusterConfig(WorkerSettings, LoggingSettings):
    scheduler_address: str = ""
    num_of_workers: int = dataclasses.field(default_factory=default_worker_count)
    worker_names: Tuple[str, ...] = ()
    auth_key: Optional[str] = None


@dataclasses.dataclass
class WorkerManagerConfig(WorkerSettings, LoggingSettings):
    """``scaler_worker_manager baremetal_native`` and the two native worker adapters."""

    scheduler_address: str = ""
    worker_manager_id: str = ""  # empty: "NAT|<hostname>" (dynamic) or "FIX|<hostname>" (fixed)
    worker_scheduler_address: Optional[str] = None  # what spawned workers dial; default scheduler_address
    mode: str = "dynamic"  # or "fixed"
    max_task_concurrency: int = dataclasses.field(default_factory=default_worker_count)  # -1: no limit (dynamic)
    worker_type: str = ""  # prefix of worker names; default NAT (dynamic) / FIX (fixed)
    adapter_web_host: Optional[str] = None  # with adapter_web_port: serve the webhook HTTP API
    adapter_web_port: Optional[int] = None
    restart_workers: bool = False  # fixed mode: restart dead workers (with back-off)
    auth_key: Optional[str] = None
