"""The settings of each component, with upstream's defaults.

Each component is built from one of these dataclasses, whether it is started from the
command line, a TOML file or Python (``SchedulerClusterCombo``). Every user-settable field
is declared with ``option(...)``: its help, kind, short flags and aliases live here and
nowhere else. The command-line parsers, the TOML sections, the validation and
``docs/commands.rst`` / ``docs/configuration.rst`` are derived from these declarations
(``scaler.config.loader``, ``scaler.config.commands``, ``scaler.config.docs``).
"""

import dataclasses
import os
from typing import Optional, Tuple

from .fields import internal, option

DEFAULT_PORT = 8516
LOGGING_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
STREAM_PATHS = ("/dev/stdout", "/dev/stderr", "-")  # logging_paths that are streams, not files
EVENT_LOOPS = ("builtin", "uvloop")
CPUS_MINUS_ONE = "number of CPUs - 1"



HARD_PROCESSOR_SUSPEND_REFUSED = (
    "hard_processor_suspend = true is not supported: scaler suspends no processor (a task waiting "
    "for the tasks it submitted runs them in its own processor; see 'Nested tasks' in the "
    "architecture docs); leave it false")


def default_worker_count() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


# Every dataclass here has a docstring: without one, dataclasses builds ``__doc__`` from
# ``inspect.signature`` of the class, which for these many-field classes cost about half of
# this module's import time (imported by every component process).
@dataclasses.dataclass
class LoggingSettings:
    """Where and how much a component logs."""

    logging_level: str = option(
        "INFO", kind="choice", choices=LOGGING_LEVELS, short=("-ll",), group="logging",
        help="log threshold")
    logging_paths: Tuple[str, ...] = option(
        ("/dev/stdout",), kind="log_paths", short=("-lp",), group="logging", metavar="PATH",
        help="where logs go: /dev/stdout, /dev/stderr or file paths (several allowed); "
             "a file's directory is created if missing")
    logging_config_file: Optional[str] = option(
        None, kind="file", short=("-lcf", "-lc"), group="logging", metavar="FILE",
        help="a Python logging.config file (INI, or JSON dictConfig if it ends in .json); "
             "when given, --logging-level and --logging-paths are ignored")


@dataclasses.dataclass
class SecuritySettings:
    """The shared secret peers authenticate with."""

    auth_key: Optional[str] = option(
        None, kind="str", group="security", secret=True, default_text="$SCALER_AUTH_KEY",
        help="shared secret that clients, workers and servers must all present (prefer --auth-key-file or the "
             "SCALER_AUTH_KEY environment variable: command lines are visible to other users)")
    auth_key_file: Optional[str] = option(
        None, kind="str", group="security", metavar="FILE",
        help="read the shared secret from FILE (one trailing newline is stripped); the file must be private to "
             "its owner (chmod 600), else it is refused. --auth-key wins over it, and it over SCALER_AUTH_KEY")


@dataclasses.dataclass
class TLSClientSettings:
    """What a side that connects to ``tls://`` addresses needs: whom to trust."""

    tls_ca: Optional[str] = option(
        None, kind="str", group="security", metavar="FILE", default_text="the system's trusted certificates",
        help="PEM file of the CA certificate(s) that tls:// servers' certificates must be signed by; without it "
             "the system's trusted certificates are used (SSL_CERT_FILE can point them at a private CA)")


@dataclasses.dataclass
class TLSSettings(TLSClientSettings):
    """The side that binds ``tls://`` addresses presents a certificate (the connecting side needs none)."""

    tls_cert: Optional[str] = option(
        None, kind="str", short=("-tc",), group="security", metavar="FILE",
        help="PEM certificate (chain) presented on the tls:// addresses this process listens on; with --tls-key")
    tls_key: Optional[str] = option(
        None, kind="str", short=("-tk",), group="security", metavar="FILE",
        help="PEM private key of --tls-cert (unencrypted; keep it private to the owner)")


CONNECTING_TLS_OVERRIDES = {  # tls_cert/tls_key on commands that only connect (upstream takes them there too)
    "tls_cert": {"inert": True, "help": "a certificate for this side: a connecting side presents none "
                                        "(give --tls-ca to say whom to trust)"},
    "tls_key": {"inert": True, "help": "the key of --tls-cert"},
}

GUI_TLS_OVERRIDES = {  # the dashboard listens for HTTP: a certificate makes it HTTPS
    "tls_cert": {"help": "serve the dashboard over HTTPS only, presenting this PEM certificate (chain); "
                         "with --tls-key"},
    "tls_key": {"help": "PEM private key of --tls-cert (unencrypted; keep it private to the owner)"},
}


@dataclasses.dataclass
class LoopSettings:
    """The event loop and its I/O threads."""

    event_loop: str = option(
        "builtin", kind="choice", choices=EVENT_LOOPS, short=("-el", "-e"),
        help="accepted for compatibility: this build always runs its own selectors-based event loop; "
             "uvloop is reported in the log and ignored")
    io_threads: int = option(
        1, kind="int", short=("-it", "-wit"), aliases=("worker-io-threads",), minimum=1, inert=True,
        help="transport I/O threads (of each worker, for clusters and managers)")


@dataclasses.dataclass
class SchedulerConfig(LoggingSettings, LoopSettings, TLSSettings, SecuritySettings):
    """``scaler_scheduler`` / the ``[scheduler]`` section."""

    address: str = option(
        "", kind="address", toml_aliases=("scheduler_address", "bind_address"), metavar="ADDRESS",
        help="address to listen on for clients and workers, e.g. tcp://127.0.0.1:8516")
    object_storage_address: Optional[str] = option(  # None: host one in-process on port + 1
        None, kind="address", short=("-osa",),
        default_text="the scheduler hosts one itself on ADDRESS port + 1",
        help="address of a separate object storage server (scaler_object_storage_server) to use")
    advertised_object_storage_address: Optional[str] = option(
        None, kind="address", short=("-aosa",), inert=True, default_text="the object storage address",
        help="object storage address told to clients and workers (NAT, containers)")
    monitor_address: Optional[str] = option(
        None, kind="address", short=("-ma",), default_text="ADDRESS port + 2",
        help="where the scheduler publishes its status snapshots for scaler_top, scaler_gui and "
             "scaler.monitor")
    protected: bool = option(
        True, kind="bool", short=("-p",),
        help="refuse Client.shutdown() so one client cannot stop a shared scheduler (-p false to allow it)")
    client_timeout_seconds: float = option(
        60, kind="float", short=("-ct",), above=0,
        help="drop a client not heard from for this long (its tasks are cancelled, its objects freed)")
    worker_timeout_seconds: float = option(
        60, kind="float", short=("-wt",), above=0,
        help="drop a worker not heard from for this long (its tasks go to other workers)")
    max_task_retries: int = option(
        3, kind="int", minimum=0,
        help="how many times a task is re-run after the worker running it died, before it fails")
    per_worker_queue_size: int = option(
        1000, kind="int", short=("-qs",), minimum=1,
        help="at most this many tasks queued on one worker (also capped by the worker's own "
             "--per-worker-task-queue-size)")
    object_storage_max_bytes: int = option(
        0, kind="int", minimum=0,
        help="memory cap of the in-process object storage, in bytes; 0 means no cap")
    policy_content: str = option(
        "allocate=even_load; scaling=no", kind="policy", short=("-pc",),
        help="allocation and scaling policy: 'allocate=even_load|capability; scaling=no|vanilla' "
             "(vanilla also takes upper_task_ratio=N; lower_task_ratio=N)")
    allocate_policy: Optional[str] = option(
        None, kind="choice", choices=("even", "even_load", "capability"),
        help="older spelling of the allocate= part of --policy-content: even (= even_load) or capability; "
             "it replaces that part")
    policy_engine_type: str = option(
        "simple", kind="choice", choices=("simple", "waterfall_v1"), short=("-et",),
        help="grammar of --policy-content; this build implements simple only")
    adapter_webhook_urls: Tuple[str, ...] = option(
        (), kind="list", short=("-awu",), metavar="URL",
        help="webhook URLs of worker adapters (scaler_worker_adapter_* --adapter-web-port) the scheduler drives")
    max_number_of_tasks_waiting: int = option(
        -1, kind="int", short=("-mt",), minimum=-1,
        help="most tasks waiting for a worker (queued, or graph nodes waiting for their inputs); a submit "
             "beyond it fails at once with SchedulerBusyError; -1 means no limit")
    object_retention_seconds: float = option(
        60, kind="float", short=("-ot",), above=0, inert=True,
        help="how long unreferenced objects are kept")
    load_balance_seconds: float = option(
        1, kind="float", short=("-ls",), nonzero=True,
        help="period of task balancing between workers (an idle worker takes back queued tasks from "
             "busy ones; also done when a worker joins or runs out of tasks); negative disables it, 0 is rejected")
    load_balance_trigger_times: int = option(
        2, kind="int", short=("-lbt",), above=0, inert=True,
        help="identical balancing advices needed before tasks move")
    status_report_interval_seconds: float = option(
        1, kind="float", short=("-sri",), above=0,
        help="period of the status snapshot published on the monitor address")


@dataclasses.dataclass
class ObjectStorageConfig(LoggingSettings, TLSSettings, SecuritySettings):
    """``scaler_object_storage_server`` / the ``[object_storage_server]`` section."""

    address: str = option(
        "", kind="address", toml_aliases=("object_storage_address", "bind_address"), metavar="ADDRESS",
        help="address to listen on, e.g. tcp://127.0.0.1:8517 (or give --name and --port)")
    max_bytes: int = option(0, kind="int", minimum=0, help="memory cap in bytes; 0 means no cap")
    identity: str = option("ObjectStorageServer", kind="str", inert=True, help="server identity")
    name: Optional[str] = option(
        None, kind="str", short=("-n",), default_text="127.0.0.1",
        help="older form: host to listen on, used with --port when ADDRESS is not given")
    port: Optional[int] = option(
        None, kind="int", short=("-p",), minimum=1, maximum=65535,
        help="older form: port to listen on, used when ADDRESS is not given")


@dataclasses.dataclass
class WorkerSettings(LoopSettings):
    """What every worker started by a cluster or a worker manager is given."""

    per_worker_capabilities: str = option(
        "", kind="capabilities", short=("-pwc",), group="worker", metavar="CAPS",
        help="capabilities every worker advertises, e.g. linux,cpu=4,gpu=1")
    per_worker_task_queue_size: int = option(
        1000, kind="int", short=("-wtqs",), minimum=1, group="worker",
        help="task slots per worker: the scheduler never queues more on one worker")
    heartbeat_interval_seconds: float = option(
        2, kind="float", short=("-his", "-hi"), aliases=("heartbeat-interval",), above=0, group="worker",
        help="seconds between worker heartbeats")
    task_timeout_seconds: float = option(
        0, kind="float", short=("-tts",), minimum=0, group="worker",
        help="per-task time limit in seconds: a task running longer is stopped (its processor replaced) and "
             "fails with TaskTimeoutError; 0 means none")
    death_timeout_seconds: float = option(
        300, kind="float", short=("-dts", "-ds"), above=0, group="worker",
        help="a worker exits after this long without reaching the scheduler (never less than three "
             "heartbeat intervals)")
    garbage_collect_interval_seconds: float = option(
        30, kind="float", short=("-gc",), minimum=0, group="worker",
        help="minimum seconds between gc.collect() calls in a worker's processor")
    trim_memory_threshold_bytes: int = option(
        1073741824, kind="int", short=("-tm",), minimum=0, group="worker",
        help="release freed memory to the OS (malloc_trim) only above this resident size")
    hard_processor_suspend: bool = option(
        False, kind="bool", short=("-hps",), group="worker",
        help="upstream's SIGSTOP suspension of a waiting processor; only false is accepted: a task "
             "waiting for its sub-tasks runs them in its own processor, none is suspended")
    preload: Optional[str] = option(
        None, kind="str", group="worker", metavar="SPEC",
        help="run before a worker's processor takes tasks: 'module.path:function(args, kwargs)' "
             "with literal arguments, or just 'module.path' to import it")
    object_storage_address: Optional[str] = option(
        None, kind="address", short=("-osa",), default_text="learned from the scheduler",
        help="object storage address for the workers, if they must use another one than the scheduler "
             "advertises")


@dataclasses.dataclass
class WorkerConfig(WorkerSettings, LoggingSettings):
    """One worker (internal: ``python -m scaler.worker --config-json``)."""

    scheduler_address: str = internal("")
    name: str = internal("")
    manager_id: str = internal("")
    auth_key: Optional[str] = internal(None)
    tls_ca: Optional[str] = internal(None)


@dataclasses.dataclass
class ClusterConfig(WorkerSettings, LoggingSettings, TLSClientSettings, SecuritySettings):
    """``scaler_cluster`` / the ``[cluster]`` section: a fixed pool of workers."""

    scheduler_address: str = option(
        "", kind="address", aliases=("address",), metavar="SCHEDULER_ADDRESS",
        help="address of the scheduler the workers join, e.g. tcp://127.0.0.1:8516")
    num_of_workers: int = option(
        dataclasses.MISSING, default_factory=default_worker_count, kind="int", short=("-n",), minimum=0,
        default_text=CPUS_MINUS_ONE, help="number of workers to start")
    worker_names: Tuple[str, ...] = option(
        (), kind="names", short=("-wn",), metavar="NAMES", default_text="host name based",
        help="comma-separated worker names, one per worker (their count must equal --num-of-workers)")
    log_hub_address: Optional[str] = option(
        None, kind="address", short=("-la",), inert=True, help="older log hub address (unused)")
    restart_workers: bool = option(
        True, kind="bool", help="restart a worker that dies, with back-off (1 s, growing to 60 s while it keeps "
                                "dying), so the pool keeps its size (false: as upstream, never)")
    worker_manager_id: str = option(
        "", kind="str", short=("-wmi",), default_text="FIX|<host>-<pid>",
        help="id under which this pool registers with the scheduler, unique per scheduler")


@dataclasses.dataclass
class WorkerManagerConfig(WorkerSettings, LoggingSettings, TLSSettings, SecuritySettings):
    """``scaler_worker_manager baremetal_native`` and the two native worker adapters."""

    scheduler_address: str = option(
        "", kind="address", metavar="SCHEDULER_ADDRESS",
        help="address of the scheduler, e.g. tcp://127.0.0.1:8516")
    worker_manager_id: str = option(  # empty: "NAT|<hostname>" (dynamic) or "FIX|<hostname>" (fixed)
        "", kind="str", short=("-wmi",), default_text="NAT|<host>-<pid> (dynamic) or FIX|<host>-<pid> (fixed)",
        help="id of this manager, unique per scheduler")
    worker_scheduler_address: Optional[str] = option(  # what spawned workers dial; default scheduler_address
        None, kind="address", short=("-wsa",), default_text="SCHEDULER_ADDRESS",
        help="scheduler address handed to the workers, if they must use another one")
    mode: str = option(
        "dynamic", kind="choice", choices=("dynamic", "fixed"),
        help="dynamic: the scheduler's scaling policy starts and stops workers; fixed: start "
             "--max-task-concurrency workers at once and keep them")
    max_task_concurrency: int = option(  # -1: no limit (dynamic)
        dataclasses.MISSING, default_factory=default_worker_count, kind="int", short=("-mtc", "-n"),
        aliases=("num-of-workers",), minimum=-1, default_text=CPUS_MINUS_ONE,
        help="dynamic: most workers at once (-1: no limit); fixed: number of workers")
    worker_type: str = option(  # prefix of worker names; default NAT (dynamic) / FIX (fixed)
        "", kind="str", default_text="NAT (dynamic) or FIX (fixed)", help="prefix of the worker names")
    adapter_web_host: Optional[str] = option(  # with adapter_web_port: serve the webhook HTTP API
        None, kind="str", metavar="HOST", help="host of the adapter's webhook HTTP server")
    adapter_web_port: Optional[int] = option(
        None, kind="int", minimum=1, maximum=65535, help="port of the adapter's webhook HTTP server")
    restart_workers: bool = option(  # fixed mode: restart dead workers (with back-off)
        True, kind="bool", help="fixed mode: restart a worker that dies, with back-off, so the pool keeps its "
                                "size (false: as upstream, never)")


@dataclasses.dataclass
class TopConfig(TLSSettings, SecuritySettings):
    """``scaler_top``: the terminal monitor."""

    monitor_address: str = option(
        "", kind="address", toml_aliases=("monitor_address", "address"), metavar="MONITOR_ADDRESS",
        help="the scheduler's monitor address, e.g. tcp://127.0.0.1:8518 (the scheduler's port + 2)")
    timeout: float = option(
        5, kind="float", short=("-t",), above=0,
        help="seconds without a status snapshot before the screen says 'disconnected' and reconnects")
    interval: float = option(
        1, kind="float", short=("-i",), above=0, help="seconds between screen refreshes")


@dataclasses.dataclass
class GuiConfig(LoggingSettings, TLSSettings, SecuritySettings):
    """``scaler_gui`` and ``scaler_ui``: the web dashboard (one process, two spellings)."""

    monitor_address: str = option(
        "", kind="address", toml_aliases=("monitor_address", "address"), metavar="MONITOR_ADDRESS",
        help="the scheduler's monitor address, e.g. tcp://127.0.0.1:8518 (the scheduler's port + 2)")
    gui_address: str = option(
        "127.0.0.1:50001", kind="str", metavar="HOST:PORT",
        help="HTTP address of the dashboard; 0.0.0.0:PORT (or [::]:PORT) serves every interface, "
             "port 0 picks a free port")
    web_host: str = option(
        "127.0.0.1", kind="str", aliases=("host",), metavar="HOST",
        help="HTTP host of the dashboard (0.0.0.0 serves every interface)")
    web_port: int = option(
        50001, kind="int", aliases=("port",), minimum=0, maximum=65535,
        help="HTTP port of the dashboard (0 picks a free port)")
    broadcast_interval_seconds: float = option(
        0.5, kind="float", short=("-bi",), above=0,
        help="shortest time between two pushes of the status to an open page")
    task_log_max_size: int = option(
        500, kind="int", short=("-tl",), minimum=0, inert=True,
        help="completed tasks kept in the task log")
    status_report_interval_seconds: float = option(
        1, kind="float", short=("-sri",), above=0,
        help="the scheduler's --status-report-interval-seconds: without a snapshot for 5 times this, the "
             "page marks the scheduler as unreachable")
    history_seconds: int = option(
        600, kind="int", minimum=10, maximum=86400,
        help="how many seconds of history the charts keep (also served to a page when it opens)")
