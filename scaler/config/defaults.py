"""Upstream's ``scaler.config.defaults`` names, read from scaler's own config dataclasses.

Each constant is the default of the field it names in ``scaler.config.components`` (one
source of truth): changing a default there changes it here. Where scaler follows its users'
documentation rather than upstream's code (``reference/commands.md`` §8), the value is
scaler's: ``DEFAULT_MAX_TASK_CONCURRENCY`` is the number of CPUs minus one, and the default
scaling policy is ``scaling=no``.
"""

from .components import (ClusterConfig, LoggingSettings, SchedulerConfig, WorkerManagerConfig, WorkerSettings,
                         default_worker_count)
from .faces import default_of as _default

DEFAULT_IO_THREADS: int = _default(SchedulerConfig, "io_threads")
DEFAULT_MAX_NUMBER_OF_TASKS_WAITING: int = _default(SchedulerConfig, "max_number_of_tasks_waiting")
DEFAULT_CLIENT_TIMEOUT_SECONDS: float = _default(SchedulerConfig, "client_timeout_seconds")
DEFAULT_WORKER_TIMEOUT_SECONDS: float = _default(SchedulerConfig, "worker_timeout_seconds")
DEFAULT_OBJECT_RETENTION_SECONDS: float = _default(SchedulerConfig, "object_retention_seconds")
DEFAULT_LOAD_BALANCE_SECONDS: float = _default(SchedulerConfig, "load_balance_seconds")
DEFAULT_LOAD_BALANCE_TRIGGER_TIMES: int = _default(SchedulerConfig, "load_balance_trigger_times")
DEFAULT_PER_WORKER_QUEUE_SIZE: int = _default(SchedulerConfig, "per_worker_queue_size")
DEFAULT_POLICY_CONTENT: str = _default(SchedulerConfig, "policy_content")
DEFAULT_POLICY_ENGINE_TYPE: str = _default(SchedulerConfig, "policy_engine_type")
STATUS_REPORT_INTERVAL_SECONDS: float = _default(SchedulerConfig, "status_report_interval_seconds")

DEFAULT_MAX_TASK_CONCURRENCY: int = default_worker_count()
DEFAULT_NUMBER_OF_WORKER: int = _default(ClusterConfig, "num_of_workers")
DEFAULT_HEARTBEAT_INTERVAL_SECONDS: float = _default(WorkerSettings, "heartbeat_interval_seconds")
DEFAULT_TASK_TIMEOUT_SECONDS: float = _default(WorkerSettings, "task_timeout_seconds")
DEFAULT_WORKER_DEATH_TIMEOUT: float = _default(WorkerSettings, "death_timeout_seconds")
DEFAULT_GARBAGE_COLLECT_INTERVAL_SECONDS: float = _default(WorkerSettings, "garbage_collect_interval_seconds")
DEFAULT_TRIM_MEMORY_THRESHOLD_BYTES: int = _default(WorkerSettings, "trim_memory_threshold_bytes")
DEFAULT_HARD_PROCESSOR_SUSPEND: bool = _default(WorkerSettings, "hard_processor_suspend")
DEFAULT_PER_WORKER_TASK_QUEUE_SIZE: int = _default(WorkerSettings, "per_worker_task_queue_size")
DEFAULT_WORKER_MANAGER_MODE: str = _default(WorkerManagerConfig, "mode")

DEFAULT_LOGGING_LEVEL: str = _default(LoggingSettings, "logging_level")
DEFAULT_LOGGING_PATHS: tuple = _default(LoggingSettings, "logging_paths")
