"""The baremetal native worker manager: worker subprocesses on this machine.

Fixed mode starts its whole pool at once and reports capacity 0, so the scheduler never
scales it (``scaler_cluster``, ``Cluster`` and ``SchedulerClusterCombo`` are this mode).
Dynamic mode starts nothing by itself: the scheduler's scaling policy asks it to start or
shut down *worker groups* of exactly one worker each, and it confirms or refuses with a
reason. Either mode can also serve the webhook HTTP API (``webhook.py``).
"""

import collections
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence

from ..config.components import WorkerConfig, WorkerManagerConfig
from ..io.address import connectable_host, parse_address
from ..io.connection import Connection, Handler
from ..io.loop import EventLoop
from ..protocol.codec import Message
from ..protocol.handshake import normalize_key
from ..protocol.messages import (ROLE_MANAGER, HeartbeatEcho, ManagerConnect, ManagerConnectReply, ManagerHeartbeat,
                                 SchedulerShutdown, ShutdownWorkerGroup, StartWorkerGroup, WorkerGroupStarted,
                                 WorkerGroupStopped)
from ..utility import process as proc_util
from .errors import GroupError, Refusal

logger = logging.getLogger(__name__)

PRELOAD_FAILED_EXIT = 3  # a worker's exit code when its processor's preload failed
WORKER_STOP_GRACE_SECONDS = 10.0
RESTART_BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)
RECONNECT_SECONDS = 1.0
WORKER_COMM = "scaler-worker"  # the name of a forked worker (its command line is its manager's)


class _Group:
    __slots__ = ("group_id", "child", "started_at", "stopping_since", "restarts")

    def __init__(self, group_id: str, child: proc_util.Child) -> None:
        self.group_id = group_id
        self.child = child
        self.started_at = time.monotonic()
        self.stopping_since: Optional[float] = None
        self.restarts = 0


class NativeWorkerManager(Handler):
    def __init__(self, loop: EventLoop, config: WorkerManagerConfig, worker_names: Sequence[str] = ()) -> None:
        mode = config.mode.lower()
        if mode not in ("fixed", "dynamic"):
            raise ValueError("mode must be 'fixed' or 'dynamic', got %r" % config.mode)
        if mode == "fixed" and config.max_task_concurrency < 0:
            raise ValueError("fixed mode needs a worker count >= 0, got %d" % config.max_task_concurrency)
        self.loop = loop
        self.config = config
        self.fixed = mode == "fixed"
        self.worker_type = config.worker_type or ("FIX" if self.fixed else "NAT")
        self.manager_id = config.worker_manager_id or "%s|%s-%d" % (self.worker_type, socket.gethostname(), os.getpid())
        self.capacity = 0 if self.fixed else config.max_task_concurrency
        self.scheduler_address = parse_address(config.scheduler_address)
        self.auth_key = config.auth_key or proc_util.auth_key_from_env()
        self.key = normalize_key(self.auth_key)
        self.groups: Dict[str, _Group] = {}
        self.stopping_groups: Dict[str, _Group] = {}
        self.restart_queue: Deque[str] = collections.deque()
        self.conn: Optional[Connection] = None
        self.registered = False
        self.refused = False
        self.stopping = False
        self.exit_code = 0
        self.death_timeout = max(config.death_timeout_seconds, 3 * config.heartbeat_interval_seconds)
        self.last_contact = time.monotonic()
        self.preload_failed = False
        self.webhook: Any = None
        self._worker_names = list(worker_names)

    def start(self) -> None:
        """Start the fixed pool's workers and dial the scheduler: called by ``run_loop`` once
        the stop handling is in place, inside the ``try`` that ends in :meth:`shutdown`, so
        a stop landing mid-start still stops and reaps every worker already started."""
        if self.fixed:
            names = self._worker_names
            for index in range(self.config.max_task_concurrency):
                name = names[index] if index < len(names) else None
                self._start_group(name, fork=True)
        self._connect()
        self.loop.call_every(self.config.heartbeat_interval_seconds, self._heartbeat)
        self.loop.call_every(0.5, self._reap)

    # --- worker groups ---
    def _new_group_id(self) -> str:
        return "%s|%s" % (self.worker_type, os.urandom(16).hex())  # random, as a uuid4's hex

    def _worker_config(self, name: str) -> WorkerConfig:
        fields = {f.name for f in dataclasses.fields(WorkerConfig)}
        values = {k: v for k, v in dataclasses.asdict(self.config).items() if k in fields}
        values.update(name=name, manager_id=self.manager_id, auth_key=self.auth_key,
                      scheduler_address=self.config.worker_scheduler_address or self.config.scheduler_address)
        return WorkerConfig(**values)

    def _start_group(self, group_id: Optional[str] = None, fork: bool = False) -> _Group:
        """Start a worker; with ``fork``, by forking this process when that is safe (one thread:
        the fixed pool's first workers), else as a new interpreter."""
        group_id = group_id or self._new_group_id()
        name = "worker %s" % group_id
        config = self._worker_config(group_id)
        if fork and proc_util.can_fork():
            from ..worker import agent, processor  # noqa: F401 - imported once here, not in each child
            child = proc_util.fork_child(name, lambda lifeline_fd: _run_forked_worker(config, lifeline_fd),
                                          comm=WORKER_COMM)
        else:
            child = proc_util.spawn_component(name, "worker", config)
        group = _Group(group_id, child)
        self.groups[group_id] = group
        return group

    def start_group(self) -> _Group:
        """Start one group on request (scheduler or webhook); raise GroupError to refuse."""
        if self.fixed:
            raise GroupError(Refusal.FIXED_POOL, "this is a fixed pool: it does not start worker groups on request")
        if self.stopping:
            raise GroupError(Refusal.STOPPING, "the worker manager is stopping")
        if self.preload_failed:
            raise GroupError(Refusal.PRELOAD_FAILED, "workers of this manager fail their preload; not starting more")
        if 0 <= self.capacity <= len(self.groups):
            raise GroupError(Refusal.AT_CAPACITY, "at capacity: %d of %d worker groups running"
                             % (len(self.groups), self.capacity))
        group = self._start_group()
        logger.info("started worker group %s (pid %d)", group.group_id, group.child.pid)
        return group

    def shutdown_group(self, group_id: str) -> None:
        if self.fixed:
            raise GroupError(Refusal.FIXED_POOL, "this is a fixed pool: it does not shut down worker groups on request")
        if not group_id:
            raise GroupError(Refusal.BAD_REQUEST, "no worker_group_id given")
        group = self.groups.pop(group_id, None)
        if group is None:
            raise GroupError(Refusal.UNKNOWN_GROUP, "unknown worker group %r" % group_id)
        group.stopping_since = time.monotonic()
        group.child.send_signal(signal.SIGTERM)  # the worker says goodbye to the scheduler, then exits
        self.stopping_groups[group_id] = group
        logger.info("shutting down worker group %s", group_id)

    def _reap(self) -> None:
        now = time.monotonic()
        for group_id, group in list(self.stopping_groups.items()):
            code = group.child.poll()
            if code is None and now - group.stopping_since > WORKER_STOP_GRACE_SECONDS:
                group.child.send_signal(signal.SIGKILL)
                continue
            if code is not None:
                group.child.close_lifeline()
                del self.stopping_groups[group_id]
        for group_id, group in list(self.groups.items()):
            code = group.child.poll()
            if code is None:
                continue
            group.child.close_lifeline()
            del self.groups[group_id]
            if self.stopping:
                continue
            if code == PRELOAD_FAILED_EXIT:
                self.preload_failed = True
                logger.error("worker %s exited: its preload failed (see its log above); not restarting it",
                             group_id)
            elif code == 0:
                logger.info("worker %s exited", group_id)
            else:
                logger.warning("worker %s exited with code %d", group_id, code)
            if self.registered and not self.fixed:
                self.conn.send(WorkerGroupStopped(group_id, True, "", "worker exited with code %d" % code))
            if self.fixed and self.config.restart_workers and code != PRELOAD_FAILED_EXIT and not self.preload_failed:
                delay = RESTART_BACKOFF_SECONDS[min(group.restarts, len(RESTART_BACKOFF_SECONDS) - 1)]
                if now - group.started_at > 60.0:
                    delay = RESTART_BACKOFF_SECONDS[0]  # it ran a good while: not a crash loop
                    group.restarts = 0
                logger.info("restarting worker %s in %.0fs", group_id, delay)
                restarts = group.restarts + 1
                self.loop.call_later(delay, lambda g=group_id, r=restarts: self._restart(g, r))
                self.restart_queue.append(group_id)
        if self.fixed and not self.groups and not self.restart_queue and not self.stopping:
            logger.info("no workers left: stopping")
            self.stop(1 if self.preload_failed else 0)

    def _restart(self, group_id: str, restarts: int) -> None:
        try:
            self.restart_queue.remove(group_id)
        except ValueError:
            pass
        if self.stopping:
            return
        self._start_group(group_id).restarts = restarts

    # --- scheduler link ---
    def _connect(self) -> None:
        if self.stopping or self.refused:
            return
        try:
            self.conn = Connection.dial(self.loop, connectable_host(self.scheduler_address), self, ROLE_MANAGER,
                                        self.key, tls_ca=self.config.tls_ca)
        except OSError as exc:
            self.connection_closed(None, str(exc))

    def connection_open(self, conn: Connection) -> None:
        self.last_contact = time.monotonic()
        conn.send(ManagerConnect(self.manager_id, self.capacity, "fixed" if self.fixed else "dynamic",
                                 self.config.per_worker_capabilities, os.getpid()))

    def message_received(self, conn: Connection, msg: Message) -> None:
        self.last_contact = time.monotonic()
        kind = type(msg)
        if kind is StartWorkerGroup:
            try:
                group = self.start_group()
                conn.send(WorkerGroupStarted(msg.request_id, True, group.group_id, ""))
            except GroupError as error:
                conn.send(WorkerGroupStarted(msg.request_id, False, "", str(error)))
        elif kind is ShutdownWorkerGroup:
            try:
                self.shutdown_group(msg.group_id)
                conn.send(WorkerGroupStopped(msg.group_id, True, "", ""))
            except GroupError as error:
                conn.send(WorkerGroupStopped(msg.group_id, False, error.kind.value, str(error)))
        elif kind is HeartbeatEcho:
            pass
        elif kind is ManagerConnectReply:
            if msg.accepted:
                self.registered = True
                if not self.fixed and msg.scaling == "no":
                    logger.warning("the scheduler's scaling policy is 'no': it will never ask this manager for "
                                   "workers (start it with --policy-content 'allocate=even_load; scaling=vanilla')")
            else:
                self.refused = True
                if self.webhook is not None:
                    logger.warning("the scheduler refused this manager (%s); still serving the webhook API",
                                   msg.reason)
                else:
                    logger.error("the scheduler refused this manager: %s", msg.reason)
                    self.stop(2)
        elif kind is SchedulerShutdown:
            logger.info("scheduler is shutting down (%s): stopping", msg.reason)
            self.stop(0)

    def connection_closed(self, conn: Optional[Connection], reason: str) -> None:
        self.registered = False
        if self.stopping or self.refused:
            return
        failure = getattr(conn, "failure", None)
        if failure:
            logger.error("cannot register with the scheduler: %s", failure)
            self.stop(2)
            return
        if time.monotonic() - self.last_contact > self.death_timeout:
            logger.error("no scheduler for %.0fs (death timeout): stopping", self.death_timeout)
            self.stop(1)
            return
        self.loop.call_later(RECONNECT_SECONDS, self._connect)

    def _heartbeat(self) -> None:
        if self.registered and self.conn is not None:
            self.conn.send(ManagerHeartbeat(time.time(), len(self.groups)))
        elif (not self.fixed and not self.refused
              and time.monotonic() - self.last_contact > self.death_timeout):
            logger.error("no scheduler for %.0fs (death timeout): stopping", self.death_timeout)
            self.stop(1)

    # --- status (webhook) ---
    def status(self) -> Dict[str, Any]:
        return {
            "worker_manager_id": self.manager_id,
            "mode": "fixed" if self.fixed else "dynamic",
            "scheduler_address": self.config.scheduler_address,
            "registered": self.registered,
            "max_worker_groups": self.capacity,
            "workers_per_group": 1,
            "groups": {gid: {"worker_ids": [gid], "pid": g.child.pid, "alive": g.child.is_alive()}
                       for gid, g in self.groups.items()},
        }

    def stop(self, code: int = 0) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.exit_code = code
        self.loop.call_later(0.01, self.loop.stop)

    def shutdown(self) -> None:
        """Stop every worker (graceful first) and reap them. Called after the loop ends."""
        if self.webhook is not None:
            self.webhook.close()
        children = [g.child for g in list(self.groups.values()) + list(self.stopping_groups.values())]
        proc_util.stop_all(children, grace_seconds=WORKER_STOP_GRACE_SECONDS)
        self.groups.clear()
        self.stopping_groups.clear()
        if self.conn is not None:
            self.conn.close("manager stopped")

    # --- thread-safe entry for the webhook server ---
    def call_in_loop(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        done = threading.Event()
        box: List[Any] = [None, None]

        def run() -> None:
            try:
                box[0] = fn()
            except BaseException as exc:  # noqa: B902 - handed back to the calling thread
                box[1] = exc
            done.set()

        self.loop.call_soon_threadsafe(run)
        if not done.wait(timeout):
            raise GroupError(Refusal.NO_ANSWER, "the worker manager did not answer within %.0fs" % timeout)
        if box[1] is not None:
            raise box[1]
        return box[0]


def _run_forked_worker(config: WorkerConfig, lifeline_fd: int) -> int:
    """A worker forked from its manager: as ``python -m ...worker`` would run it."""
    key = config.auth_key
    env = proc_util.child_environment({proc_util.AUTH_KEY_ENV: key} if key else None)
    os.environ.clear()
    os.environ.update(env)
    from ..worker.agent import run_worker
    proc_util.start_component(config, "worker")
    return run_worker(config, lifeline_fd)


def run_native_manager(config: WorkerManagerConfig, lifeline_fd: Optional[int] = None,
                       worker_names: Sequence[str] = ()) -> int:
    loop = EventLoop()
    manager = NativeWorkerManager(loop, config, worker_names)
    if config.adapter_web_host or config.adapter_web_port:
        from .webhook import WebhookServer  # http.server, email...: only for managers that serve it
        manager.webhook = WebhookServer(config.adapter_web_host or "127.0.0.1", config.adapter_web_port or 8080,
                                        manager)
        logger.info("webhook API on http://%s:%d/", *manager.webhook.address)

    def cleanup() -> None:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        manager.shutdown()

    signal.signal(signal.SIGCHLD, lambda *_: loop.call_soon_threadsafe(manager._reap))
    logger.info("worker manager %s (%s mode, %s) for %s", manager.manager_id, "fixed" if manager.fixed else "dynamic",
                "%d workers" % config.max_task_concurrency if manager.fixed else
                ("up to %d workers" % manager.capacity if manager.capacity >= 0 else "no worker limit"),
                config.scheduler_address)
    proc_util.run_loop(loop, lambda: manager.stop(0), lifeline_fd, start=manager.start, cleanup=cleanup,
                       hard_exit_after=15.0)
    return manager.exit_code
