"""Fixed pools of workers: ``Cluster`` and ``SchedulerClusterCombo``."""

import atexit
import logging
import socket
import weakref
from typing import Any, Dict, Optional, Sequence, Tuple

from ..io.address import listen, parse_address
from ..utility import process as proc_util

# The configuration modules are imported by the constructors, not here: ``from scaler import
# SchedulerClusterCombo`` stays cheap (it is what every user script starts with).

logger = logging.getLogger(__name__)


class Cluster(proc_util.ProcessHandle):
    """A process running a fixed pool of workers connected to ``address``.

    Mirrors upstream's ``Cluster`` (a ``multiprocessing.Process``): ``start()``, ``join()``,
    ``terminate()``, ``is_alive()``, ``pid``. One worker per entry of ``worker_names``, or
    ``n_workers`` workers.
    """

    def __init__(self, address: str, n_workers: Optional[int] = None, worker_names: Sequence[str] = (),
                 per_worker_capabilities: str = "", per_worker_task_queue_size: int = 1000,
                 heartbeat_interval_seconds: float = 2, task_timeout_seconds: float = 0,
                 death_timeout_seconds: float = 300, garbage_collect_interval_seconds: float = 30,
                 trim_memory_threshold_bytes: int = 1073741824, hard_processor_suspend: bool = False,
                 worker_io_threads: int = 1, event_loop: str = "builtin", preload: Optional[str] = None,
                 logging_paths: Tuple[str, ...] = ("/dev/stdout",), logging_level: str = "INFO",
                 logging_config_file: Optional[str] = None, auth_key: Optional[str] = None,
                 object_storage_address: Optional[str] = None, auth_key_file: Optional[str] = None,
                 tls_ca: Optional[str] = None) -> None:
        from ..config.components import HARD_PROCESSOR_SUSPEND_REFUSED, default_worker_count
        from ..config.key_file import resolve_auth_key
        parse_address(address)
        if tls_ca is not None:
            from ..io.tls import check_ca_file
            check_ca_file(tls_ca)
        if hard_processor_suspend:
            raise ValueError(HARD_PROCESSOR_SUSPEND_REFUSED)
        names = tuple(getattr(worker_names, "names", worker_names))  # upstream passes a WorkerNames
        # a string, a dict or upstream's WorkerCapabilities; checked below as the flag would be
        per_worker_capabilities = getattr(per_worker_capabilities, "capabilities", per_worker_capabilities) or ""
        count = n_workers if n_workers is not None else (len(names) or default_worker_count())
        self.config = _config("Cluster", "cluster", dict(
            scheduler_address=address, num_of_workers=count, worker_names=names,
            per_worker_capabilities=per_worker_capabilities, per_worker_task_queue_size=per_worker_task_queue_size,
            heartbeat_interval_seconds=heartbeat_interval_seconds, task_timeout_seconds=task_timeout_seconds,
            death_timeout_seconds=death_timeout_seconds,
            garbage_collect_interval_seconds=garbage_collect_interval_seconds,
            trim_memory_threshold_bytes=trim_memory_threshold_bytes, hard_processor_suspend=hard_processor_suspend,
            io_threads=worker_io_threads, event_loop=event_loop, preload=preload,
            object_storage_address=object_storage_address,
            logging_paths=tuple(logging_paths), logging_level=logging_level,
            logging_config_file=logging_config_file, tls_ca=tls_ca))
        self._auth_key = resolve_auth_key(auth_key, auth_key_file)
        self._child: Optional[proc_util.Child] = None

    def start(self) -> None:
        if self._child is not None:
            raise RuntimeError("cluster already started")
        self._child = proc_util.spawn_component("cluster", "cluster", self.config, auth_key=self._auth_key)


# The keyword a Python user knows a configuration field by, where the two differ.
_KEYWORDS = {"io_threads": "worker_io_threads", "num_of_workers": "n_workers", "scheduler_address": "address",
             "per_worker_queue_size": "per_worker_task_queue_size", "policy_content": "scaler_policy"}
_SCHEDULER_KEYWORDS = dict(_KEYWORDS, io_threads="scheduler_io_threads")


def _config(caller: str, component: str, values: Dict[str, Any]) -> Any:
    """Check Python arguments with the same code as the command's flags (ValueError if bad)."""
    from ..config.commands import CLUSTER, SCHEDULER
    from ..config.loader import config_from_python
    if component == "scheduler":
        return config_from_python(SCHEDULER, values, caller, _SCHEDULER_KEYWORDS)
    return config_from_python(CLUSTER, values, caller, _KEYWORDS)


_LIVE_COMBOS: "weakref.WeakSet[SchedulerClusterCombo]" = weakref.WeakSet()


@atexit.register
def _shutdown_live_combos() -> None:
    for combo in list(_LIVE_COMBOS):
        combo.shutdown()


class SchedulerClusterCombo:
    """A scheduler (with its object storage server) and a fixed pool of workers, on this machine.

    The listening sockets are bound here, before any process starts, so a busy port fails
    right away in the caller and clients can connect at once: the kernel queues their
    connections until the scheduler accepts them. The scheduler and the pool start in
    parallel.

    Every parameter reaches the scheduler or the pool (``tests/test_combo_forwarding.py``
    checks each one) and is checked by the same code as the matching command-line flag
    (``ValueError`` naming the argument, before any process starts). ``security_config``
    (a ``SecurityConfig``) gives the scheduler its TLS certificate and key (without
    ``address``, the scheduler then listens on ``tls://`` on a free port; object storage
    and the monitor follow its scheme) and the workers (and the scheduler) the CA to verify
    it with, ``tls_ca`` (or ``security_config.tls_ca``). ``scaler_policy``
    is the scheduler's policy: upstream's ``PolicyConfig``, a string like
    ``"allocate=even_load; scaling=vanilla"``, or a ``Policy``.

    As upstream's, the processes are reachable for failure drills: ``_scheduler`` (the
    scheduler, hosting object storage unless ``object_storage_address`` names one) and
    ``_worker_manager_process`` (the fixed pool; the workers are its direct children) behave
    like ``multiprocessing.Process`` (``pid``, ``is_alive()``, ``join(timeout)``,
    ``terminate()``, ``kill()``, ``exitcode``), and ``_worker_manager.config`` is the pool's
    configuration as upstream's ``NativeWorkerManagerConfig``.
    """

    def __init__(self, n_workers: Optional[int] = None, address: Optional[str] = None,
                 object_storage_address: Optional[str] = None, monitor_address: Optional[str] = None,
                 per_worker_capabilities: Optional[Dict[str, int]] = None, worker_io_threads: int = 1,
                 scheduler_io_threads: int = 1, max_number_of_tasks_waiting: int = -1,
                 heartbeat_interval_seconds: float = 2, client_timeout_seconds: float = 60,
                 worker_timeout_seconds: float = 60, object_retention_seconds: float = 60,
                 task_timeout_seconds: float = 0, death_timeout_seconds: float = 300,
                 load_balance_seconds: float = 1, load_balance_trigger_times: int = 2,
                 garbage_collect_interval_seconds: float = 30, trim_memory_threshold_bytes: int = 1073741824,
                 per_worker_task_queue_size: int = 1000, hard_processor_suspend: bool = False,
                 protected: bool = True, scaler_policy: Any = None, event_loop: str = "builtin",
                 logging_paths: Tuple[str, ...] = ("/dev/stdout",), logging_level: str = "INFO",
                 logging_config_file: Optional[str] = None, worker_manager_id: str = "combo",
                 security_config: Any = None, auth_key: Optional[str] = None,
                 per_worker_queue_size: Optional[int] = None, preload: Optional[str] = None,
                 auth_key_file: Optional[str] = None, tls_ca: Optional[str] = None) -> None:
        from ..config.common.security import tls_settings
        from ..config.components import HARD_PROCESSOR_SUSPEND_REFUSED, default_worker_count
        from ..config.key_file import resolve_auth_key
        if hard_processor_suspend:
            raise ValueError(HARD_PROCESSOR_SUSPEND_REFUSED)
        if per_worker_queue_size is not None:  # upstream's older name
            per_worker_task_queue_size = per_worker_queue_size
        n_workers = default_worker_count() if n_workers is None else n_workers
        if n_workers < 0:
            raise ValueError("n_workers must be >= 0, got %d" % n_workers)
        policy_content = _policy_content(scaler_policy)  # checked before any socket or process exists
        tls = tls_settings(security_config, tls_ca)
        if tls["tls_cert"] is not None or tls["tls_key"] is not None:
            from ..io.tls import server_context
            # a certificate that cannot be loaded is a ValueError before anything starts
            server_context(tls["tls_cert"], tls["tls_key"])  # type: ignore[arg-type]
        if tls["tls_ca"] is not None:
            from ..io.tls import check_ca_file
            check_ca_file(tls["tls_ca"])
        capabilities = getattr(per_worker_capabilities, "capabilities", per_worker_capabilities) or ""
        self._auth_key = resolve_auth_key(auth_key, auth_key_file)
        self._children = []
        self._stopped = False

        if address is None:  # a free port; tls:// when a certificate is given
            sock = _listen_free_port("127.0.0.1")
            bind = parse_address("%s://127.0.0.1:%d" % ("tls" if tls["tls_cert"] else "tcp", sock.getsockname()[1]))
        else:
            bind = parse_address(address)
            sock = listen(bind)
        self._address = str(bind)
        opened = [sock]
        try:  # object storage and the monitor: as given, else port + 1 and + 2 (free ports when we chose)
            storage, storage_sock = _bind_beside(bind, object_storage_address, 1, address is None)
            opened.append(storage_sock)
            monitor, monitor_sock = _bind_beside(bind, monitor_address, 2, address is None)
            opened.append(monitor_sock)
            _check_tls(tls, (bind, storage, monitor))
        except BaseException:
            for opened_sock in opened:
                opened_sock.close()
            raise
        self._object_storage_address = str(storage)
        self._monitor_address = str(monitor)

        try:  # the same checks as the commands' flags; nothing is started if one fails
            scheduler_config = _config("SchedulerClusterCombo", "scheduler", dict(
                address=self._address, object_storage_address=self._object_storage_address,
                monitor_address=self._monitor_address, protected=protected,
                client_timeout_seconds=client_timeout_seconds,
                worker_timeout_seconds=worker_timeout_seconds, per_worker_queue_size=per_worker_task_queue_size,
                max_number_of_tasks_waiting=max_number_of_tasks_waiting,
                object_retention_seconds=object_retention_seconds, load_balance_seconds=load_balance_seconds,
                load_balance_trigger_times=load_balance_trigger_times, policy_content=policy_content,
                event_loop=event_loop, io_threads=scheduler_io_threads, logging_paths=tuple(logging_paths),
                logging_level=logging_level, logging_config_file=logging_config_file, **tls))
            cluster_config = _config("SchedulerClusterCombo", "cluster", dict(
                scheduler_address=self._address, num_of_workers=n_workers, per_worker_capabilities=capabilities,
                per_worker_task_queue_size=per_worker_task_queue_size,
                heartbeat_interval_seconds=heartbeat_interval_seconds, task_timeout_seconds=task_timeout_seconds,
                death_timeout_seconds=death_timeout_seconds,
                garbage_collect_interval_seconds=garbage_collect_interval_seconds,
                trim_memory_threshold_bytes=trim_memory_threshold_bytes, hard_processor_suspend=hard_processor_suspend,
                io_threads=worker_io_threads, event_loop=event_loop, preload=preload,
                logging_paths=tuple(logging_paths),
                logging_level=logging_level, logging_config_file=logging_config_file,
                worker_manager_id=worker_manager_id, tls_ca=tls["tls_ca"]))
        except BaseException:
            for opened_sock in (sock, storage_sock, monitor_sock):
                opened_sock.close()
            raise
        self._cluster_config = cluster_config
        try:
            # The pool first: its start-up is the longer chain (pool, then workers, then their
            # processors: three interpreters in a row), the scheduler's is one. The workers can
            # dial at once, the sockets being bound already. _children stays in stop order's
            # reverse: the scheduler first, so that the workers stop before it.
            self._worker_manager_process = proc_util.spawn_component("cluster", "cluster", cluster_config,
                                                                     auth_key=self._auth_key)
            self._children.append(self._worker_manager_process)
            self._scheduler = proc_util.spawn_component(
                "scheduler", "scheduler", scheduler_config,
                ["--listen-fd", str(sock.fileno()), "--storage-listen-fd", str(storage_sock.fileno()),
                 "--monitor-listen-fd", str(monitor_sock.fileno())],
                auth_key=self._auth_key, pass_fds=(sock.fileno(), storage_sock.fileno(), monitor_sock.fileno()))
            self._children.insert(0, self._scheduler)
        except BaseException:
            self.shutdown()
            raise
        finally:
            sock.close()
            storage_sock.close()
            monitor_sock.close()
        _LIVE_COMBOS.add(self)

    def get_address(self) -> str:
        return self._address

    @property
    def _worker_manager(self) -> Any:
        """The pool as upstream's ``NativeWorkerManager``: its ``config`` is what the pool runs."""
        from ..config.section.native_worker_manager import NativeWorkerManagerConfig
        from ..worker_manager_adapter.baremetal.native import NativeWorkerManager
        from .pool import manager_config
        return NativeWorkerManager(NativeWorkerManagerConfig.from_scaler(manager_config(self._cluster_config)))

    @property
    def object_storage_address(self) -> str:
        return self._object_storage_address

    @property
    def monitor_address(self) -> str:
        """Where the scheduler publishes its status (``scaler_top``, ``scaler_gui``, ``scaler.monitor``)."""
        return self._monitor_address

    def shutdown(self) -> None:
        """Stop the workers, then the scheduler; reap every process. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        _LIVE_COMBOS.discard(self)
        proc_util.stop_all(self._children, grace_seconds=10.0)

    def __enter__(self) -> "SchedulerClusterCombo":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __del__(self) -> None:
        try:
            self.shutdown()
        except Exception:
            pass


def _policy_content(policy: Any) -> str:
    """``scaler_policy`` as the scheduler's policy string; a bad one raises ValueError before anything starts."""
    from ..config.policy import DEFAULT_POLICY, parse_policy
    if policy is None:
        return DEFAULT_POLICY
    engine = getattr(policy, "policy_engine_type", "simple")  # upstream's PolicyConfig
    if engine != "simple":
        raise ValueError("scaler_policy: policy engine %r is not available in this build: expected simple" % engine)
    text = str(getattr(policy, "policy_content", policy))
    parse_policy(text)
    return text


def _check_tls(tls: Dict[str, Optional[str]], listeners: Sequence[Any]) -> None:
    """tls:// addresses need a certificate, and a certificate needs a tls:// address (as on the command line)."""
    tls_listeners = [str(address) for address in listeners if address.is_tls]
    if tls_listeners and tls["tls_cert"] is None:
        raise ValueError("SchedulerClusterCombo: %s is a tls:// address: give security_config=SecurityConfig("
                         "tls_cert=..., tls_key=...)" % tls_listeners[0])
    if tls["tls_cert"] is not None and not tls_listeners:
        raise ValueError("SchedulerClusterCombo: a TLS certificate is given but no address is tls://: give "
                         "address='tls://HOST:PORT' (or no address)")


def _bind_beside(bind: Any, given: Optional[str], offset: int, free: bool) -> Tuple[Any, socket.socket]:
    """A listening socket for a companion of the scheduler at ``bind``: at ``given`` if any,
    else on a free port when the scheduler's own port was chosen freely, else port + ``offset``."""
    if given is not None:
        address = parse_address(given)
        return address, listen(address)
    if free:
        sock = _listen_free_port(bind.host)
        return bind._replace(port=sock.getsockname()[1]), sock
    address = bind.with_port_offset(offset)
    return address, listen(address)


def _listen_free_port(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


__all__ = ["Cluster", "SchedulerClusterCombo"]
