"""Every command: its name, TOML section, dataclass and per-command adjustments.

The options themselves are declared once, on the dataclass fields in ``components.py``.
"""

from typing import Dict, List, Optional, Tuple

from ..io.address import Address, parse_address
from .components import (CONNECTING_TLS_OVERRIDES, CPUS_MINUS_ONE, GUI_TLS_OVERRIDES, ClusterConfig, GuiConfig,
                         ObjectStorageConfig, SchedulerConfig, TopConfig, WorkerConfig, WorkerManagerConfig,
                         default_worker_count)
from .loader import Command, Resolution

VERSION_NOTE = "Every flag can also be set in the TOML file given with --config (key = long flag, - becomes _)."


def _replace_allocate(policy: str, allocate: str) -> str:
    items = [item.strip() for item in policy.split(";") if item.strip()]
    items = [item for item in items if item.partition("=")[0].strip() != "allocate"]
    return "; ".join(["allocate=%s" % allocate] + items)


def _check_listener_tls(resolution: Resolution, listeners: List[Tuple[str, Address]]) -> None:
    """A command that listens: its ``tls://`` addresses need --tls-cert and --tls-key (which must
    load), and those are only for ``tls://`` addresses."""
    cert = _cert_and_key(resolution)
    tls_names = [name for name, address in listeners if address.is_tls]
    if tls_names and cert is None:
        raise resolution.error(tls_names[0], "a tls:// address needs --tls-cert and --tls-key (tls_cert and tls_key "
                                             "in TOML): the certificate this side presents")
    if cert is not None and not tls_names:
        raise resolution.error("tls_cert", "given, but no address is tls://: listen on tls://HOST:PORT to use TLS, "
                                           "or drop --tls-cert and --tls-key")
    _load_cert_and_key(resolution)


def _cert_and_key(resolution: Resolution) -> Optional[str]:
    """--tls-cert and --tls-key go together: the certificate's path, or None for neither."""
    values = resolution.values
    cert, key = values.get("tls_cert"), values.get("tls_key")
    if (cert is None) != (key is None):
        raise resolution.error("tls_key" if cert is not None else "tls_cert",
                               "--tls-cert and --tls-key go together: give both (tls_cert and tls_key in TOML)")
    return cert


def _load_cert_and_key(resolution: Resolution) -> None:
    """The certificate and key load (a one-line error now, not when the first peer connects)."""
    values = resolution.values
    if values.get("tls_cert") is not None:
        from ..io.tls import server_context
        try:
            server_context(values["tls_cert"], values["tls_key"])
        except ValueError as exc:
            raise resolution.error("tls_cert", str(exc)) from None


def _finalize_scheduler(resolution: Resolution) -> None:
    values = resolution.values
    if values["policy_engine_type"] != "simple":
        raise resolution.error("policy_engine_type", "'%s' is not available in this build: expected simple"
                               % values["policy_engine_type"])
    allocate_policy = values.get("allocate_policy")
    if allocate_policy and (resolution.sources["policy_content"].kind != "cli"
                            or resolution.sources["allocate_policy"].kind == "cli"):
        allocate = "capability" if allocate_policy == "capability" else "even_load"
        values["policy_content"] = _replace_allocate(values["policy_content"], allocate)
    address_text = values.get("address")
    if not address_text:
        return
    address = parse_address(address_text)
    if values.get("object_storage_address") is None:  # hosted in-process on port + 1
        try:
            address.with_port_offset(1)
        except ValueError:
            raise resolution.error("address", "port + 1 (the default object_storage_address) is out of range: "
                                              "give --object-storage-address") from None
    for name in ("object_storage_address", "monitor_address"):
        other = values.get(name)
        if other is not None and parse_address(other) == address:
            raise resolution.error(name, "must differ from the scheduler address %s" % address_text)
    listeners: List[Tuple[str, Address]] = [("address", address)]
    if values.get("object_storage_address") is None:  # hosted here, on port + 1, with the same scheme
        listeners.append(("address", address.with_port_offset(1)))
    if values.get("monitor_address") is not None:
        listeners.append(("monitor_address", parse_address(values["monitor_address"])))
    else:
        listeners.append(("address", address))  # port + 2, same scheme
    _check_listener_tls(resolution, listeners)


def _finalize_object_storage(resolution: Resolution) -> None:
    values = resolution.values
    if values["address"]:
        _check_listener_tls(resolution, [("address", parse_address(values["address"]))])
        return
    if values.get("tls_cert") is not None or values.get("tls_key") is not None:
        _check_listener_tls(resolution, [])  # --name/--port: a tcp:// address
    if values["port"] is None:
        if values["name"] is not None:
            raise resolution.error("name", "--name needs --port (or give ADDRESS instead)")
        return
    host = values["name"] or "127.0.0.1"
    text = "tcp://%s:%d" % ("[%s]" % host if ":" in host else host, values["port"])
    try:
        parse_address(text)
    except ValueError as exc:
        raise resolution.error("name", "expected a host name or IP address, got %r (%s)" % (values["name"], exc))
    values["address"] = text


def _finalize_cluster(resolution: Resolution) -> None:
    values = resolution.values
    names = values["worker_names"]
    if not names:
        return
    if not resolution.given("num_of_workers"):
        values["num_of_workers"] = len(names)
    elif len(names) != values["num_of_workers"]:
        raise resolution.error("worker_names", "%d names given for %d workers (num_of_workers): give one name per "
                                               "worker" % (len(names), values["num_of_workers"]))


def _finalize_worker_manager(resolution: Resolution) -> None:
    values = resolution.values
    if values["mode"] == "fixed" and values["max_task_concurrency"] < 0:
        raise resolution.error("max_task_concurrency", "fixed mode starts exactly this many workers: expected an "
                                                       "integer >= 0, got %d" % values["max_task_concurrency"])


SCHEDULER = Command(
    prog="scaler_scheduler", section="scheduler", config_class=SchedulerConfig, positional="address",
    modules=("scaler.scheduler", "scaler.entry_points.scheduler"),
    description="Run a scaler scheduler. Unless --object-storage-address is given it also hosts the object "
                "storage, on ADDRESS port + 1.",
    epilog="example:\n  scaler_scheduler tcp://127.0.0.1:8516 -p false\n\n" + VERSION_NOTE,
    internal_flags=("lifeline-fd", "config-json", "listen-fd", "storage-listen-fd", "monitor-listen-fd"),
    finalize=_finalize_scheduler)

OBJECT_STORAGE = Command(
    prog="scaler_object_storage_server", section="object_storage_server", config_class=ObjectStorageConfig,
    positional="address", modules=("scaler.object_storage", "scaler.entry_points.object_storage"),
    description="Run a standalone object storage server (give its address to the scheduler with "
                "--object-storage-address).",
    epilog="example:\n  scaler_object_storage_server tcp://127.0.0.1:8517\n\n" + VERSION_NOTE,
    exclude=("tls_ca",), internal_flags=("lifeline-fd", "config-json", "listen-fd"),
    finalize=_finalize_object_storage)

CLUSTER = Command(
    prog="scaler_cluster", section="cluster", config_class=ClusterConfig, positional="scheduler_address",
    modules=("scaler.cluster", "scaler.entry_points.cluster"),
    description="Start a fixed pool of workers connected to a scheduler and keep them until stopped "
                "(a worker that dies is restarted with back-off unless --restart-workers false).",
    epilog="example:\n  scaler_cluster -n 10 tcp://127.0.0.1:8516 -ds 300\n\n" + VERSION_NOTE,
    internal_flags=("lifeline-fd", "config-json"), finalize=_finalize_cluster)

WORKER_MANAGER_BAREMETAL = Command(
    prog="scaler_worker_manager baremetal_native", section="worker_manager", array_type="baremetal_native",
    config_class=WorkerManagerConfig, positional="scheduler_address",
    modules=("scaler.worker_manager", "scaler.entry_points.worker_manager"),
    description="Start workers on this machine for a scheduler: on demand (--mode dynamic, driven by the "
                "scheduler's scaling policy) or a fixed pool (--mode fixed).",
    epilog="examples:\n  scaler_worker_manager baremetal_native tcp://127.0.0.1:8516 --mode fixed -mtc 4\n"
           "  scaler_worker_manager baremetal_native tcp://127.0.0.1:8516 --max-task-concurrency 4\n\n"
           + VERSION_NOTE,
    exclude=("adapter_web_host", "adapter_web_port"), overrides=CONNECTING_TLS_OVERRIDES,
    internal_flags=("lifeline-fd", "config-json"),
    finalize=_finalize_worker_manager)

_ADAPTER_OVERRIDES = {
    "adapter_web_host": {},
    "adapter_web_port": {"short": ("-p",)},
}

NATIVE_ADAPTER = Command(
    prog="scaler_worker_adapter_native", section="native_worker_adapter", config_class=WorkerManagerConfig,
    positional="scheduler_address",
    modules=("scaler.entry_points.worker_adapter_native",),
    description="Native worker adapter: start workers on this machine when the scheduler's scaling policy asks "
                "for them (the same as 'scaler_worker_manager baremetal_native --mode dynamic').",
    epilog="example:\n  scaler_worker_adapter_native tcp://127.0.0.1:8516 --max-workers 4\n\n" + VERSION_NOTE,
    overrides=dict(_ADAPTER_OVERRIDES, **CONNECTING_TLS_OVERRIDES, max_task_concurrency={
        "flag": "max-workers", "short": ("-mw",), "aliases": ("max-task-concurrency", "num-of-workers"),
        "default": -1, "default_text": None,
        "help": "most worker processes at once; -1 means no limit"}),
    fixed={"mode": "dynamic"}, internal_flags=("lifeline-fd", "config-json"))

FIXED_NATIVE_ADAPTER = Command(
    prog="scaler_worker_adapter_fixed_native", section="fixed_native_worker_adapter",
    config_class=WorkerManagerConfig, positional="scheduler_address",
    modules=("scaler.entry_points.worker_adapter_fixed_native",),
    description="Fixed native worker adapter: start a fixed number of workers on this machine at once and keep "
                "them (the same as 'scaler_worker_manager baremetal_native --mode fixed').",
    epilog="example:\n  scaler_worker_adapter_fixed_native tcp://127.0.0.1:8516 --max-workers 8\n\n" + VERSION_NOTE,
    overrides=dict(_ADAPTER_OVERRIDES, **CONNECTING_TLS_OVERRIDES, max_task_concurrency={
        "flag": "max-workers", "short": ("-mw",), "aliases": ("max-task-concurrency", "num-of-workers"),
        "default": default_worker_count(), "default_text": CPUS_MINUS_ONE, "minimum": 0,
        "help": "number of worker processes to start"}),
    fixed={"mode": "fixed"}, internal_flags=("lifeline-fd", "config-json"))

def split_host_port(text: str) -> "Tuple[str, int]":
    """``"host:port"`` (IPv6 as ``"[::1]:port"`` or split on the last ':'); ValueError if malformed."""
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("expected HOST:PORT with a port from 0 to 65535, got %r" % text)
    return host, int(port_text)


def _check_https(resolution: Resolution) -> None:
    """The dashboard's --tls-cert and --tls-key (HTTPS): both or neither, and they must load."""
    _cert_and_key(resolution)
    _load_cert_and_key(resolution)


def _finalize_gui(resolution: Resolution) -> None:
    values = resolution.values
    try:
        split_host_port(values["gui_address"])
    except ValueError as exc:
        raise resolution.error("gui_address", str(exc)) from None
    _check_https(resolution)


def _finalize_webui(resolution: Resolution) -> None:
    values = resolution.values
    host = values["web_host"]
    if not host or any(c in host for c in " /"):
        raise resolution.error("web_host", "expected a host name or IP address, got %r" % host)
    values["gui_address"] = "%s:%d" % ("[%s]" % host if ":" in host else host, values["web_port"])
    _check_https(resolution)


TOP = Command(
    prog="scaler_top", section="top", config_class=TopConfig, positional="monitor_address",
    modules=("scaler.top", "scaler.entry_points.top"),
    description="Watch a scheduler in the terminal: its load, task totals and rates, and a table of its workers "
                "(keys on screen sort the table; q quits).",
    epilog="example:\n  scaler_top tcp://127.0.0.1:8518\n\n" + VERSION_NOTE, overrides=CONNECTING_TLS_OVERRIDES)

GUI = Command(
    prog="scaler_gui", section="gui", config_class=GuiConfig, positional="monitor_address",
    modules=("scaler.gui", "scaler.entry_points.gui"),
    description="Serve a web dashboard of a scheduler (one self-contained page: no external scripts, styles or "
                "fonts), a JSON snapshot at /api/status and a Server-Sent Events stream at /api/events.",
    epilog="example:\n  scaler_gui tcp://127.0.0.1:8518 --gui-address 127.0.0.1:50001\n\n" + VERSION_NOTE,
    exclude=("web_host", "web_port"), overrides=GUI_TLS_OVERRIDES,
    internal_flags=("lifeline-fd", "config-json", "listen-fd"),
    finalize=_finalize_gui)

WEBUI = Command(
    prog="scaler_ui", section="webui", config_class=GuiConfig, positional="monitor_address",
    modules=("scaler.entry_points.ui",),
    description="The web dashboard under its older name and flags (the same as scaler_gui).",
    epilog="example:\n  scaler_ui tcp://127.0.0.1:8518 --web-host 127.0.0.1 --web-port 50001\n\n" + VERSION_NOTE,
    exclude=("gui_address",), overrides=GUI_TLS_OVERRIDES,
    internal_flags=("lifeline-fd", "config-json", "listen-fd"), finalize=_finalize_webui)

# Internal: one worker, as clusters and worker managers start it (not a documented command).
# A worker always runs the builtin loop, so its event_loop is fixed: the manager that
# started it has already logged the note about uvloop, once.
WORKER = Command(
    prog="python -m scaler.worker", section="worker", config_class=WorkerConfig, positional="scheduler_address",
    modules=("scaler.worker",), description="Run one scaler worker (started by clusters and worker managers).",
    fixed={"event_loop": "builtin"}, internal_flags=("lifeline-fd", "config-json"))

WORKER_MANAGER_TYPES: Dict[str, Command] = {"baremetal_native": WORKER_MANAGER_BAREMETAL}

ALL_COMMANDS: List[Command] = [SCHEDULER, OBJECT_STORAGE, CLUSTER, WORKER_MANAGER_BAREMETAL, NATIVE_ADAPTER,
                               FIXED_NATIVE_ADAPTER, TOP, GUI, WEBUI]

# What the 'scaler' launcher does with each top-level section of a file.
LAUNCHED_SECTIONS: Tuple[str, ...] = ("object_storage_server", "scheduler", "cluster", "worker_manager", "gui",
                                      "webui")
SKIPPED_SECTIONS: Dict[str, str] = {
    "top": "scaler_top is interactive: run it in a terminal with scaler_top -c FILE",
    "native_worker_adapter": "worker adapters are started on their own: scaler_worker_adapter_native -c FILE",
    "fixed_native_worker_adapter": "worker adapters are started on their own: "
                                   "scaler_worker_adapter_fixed_native -c FILE",
    "symphony_worker_adapter": "the Symphony adapter is not part of this build",
    "ecs_worker_adapter": "the ECS adapter is not part of this build",
}
