"""The scheduler process: routes frames between peers and :class:`SchedulerState`.

By default the object storage server runs inside this process on its own port (address
port + 1): a put or get then costs no extra process wake-up, and the scheduler frees a
departed client's objects with a function call instead of a message.
"""

import logging
import os
import socket
import time
from typing import Any, Dict, FrozenSet, List, Optional

from .. import __version__
from ..config.components import SchedulerConfig
from ..io.address import Address, connectable_host, exposure_warning, listen, parse_address
from ..io.connection import Connection, Handler, Listener
from ..io.loop import EventLoop
from ..io.spin import Spinner
from ..object_storage.server import ObjectStorageServer
from ..object_storage.store import ObjectStore
from ..protocol.codec import Message
from ..protocol.handshake import normalize_key
from ..protocol.messages import (ROLE_CLIENT, ROLE_MANAGER, ROLE_SCHEDULER, ROLE_WORKER, ClientConnect,
                                 ClientConnectReply, GraphSubmit, ManagerConnect, ManagerConnectReply,
                                 ManagerHeartbeat, ShutdownWorkerGroup, StartWorkerGroup, WorkerGroupStarted,
                                 WorkerGroupStopped, ClientDisconnect, Heartbeat, HeartbeatEcho, ObjectDelete,
                                 ObjectDeleteOwner, ProcessorConnect, SchedulerShutdown, ShutdownRefused, TaskCancel,
                                 TaskResult, TaskSubmit, WorkerConnect, WorkerConnectReply, WorkerDisconnect,
                                 WorkerHeartbeat, WorkerObjectReady, WorkerObjectStored, WorkerProcessorExited,
                                 WorkerStatus)
from ..config.policy import parse_policy
from ..utility.cpu_policy import BatchPolicy
from ..utility.procstat import ProcessMeter
from ..worker_manager.errors import Refusal
from ..utility.outage import Outage
from .graph import unpack_indices
from .managers import ManagerRecord, ManagerTable
from .monitor import MonitorServer, monitor_address_of, open_monitor_socket
from .state import SchedulerState, WorkerInfo, capability_names, short_id
from .status import RateMeter, build_snapshot, totals_of
from .webhook_client import RETRY_SECONDS, WebhookWorker
from .worker_host import WorkerHost

logger = logging.getLogger(__name__)

TIMEOUT_CHECK_SECONDS = 1.0
# An authenticated peer must say who it is (ClientConnect, WorkerConnect, ManagerConnect)
# within this; one that does not is closed, so idle sockets cannot pile up to the fd limit.
REGISTRATION_TIMEOUT_SECONDS = 10.0
# A client that stopped reading while its results keep coming is dropped past this many
# bytes waiting for it (its tasks are cancelled, as when it leaves): the scheduler's memory
# stays bounded whatever a client does.
CLIENT_WRITE_LIMIT = 64 * 1024 * 1024
SCALING_INTERVAL_SECONDS = 1.0
TASK_TIMEOUT_CHECK_SECONDS = 0.25


class _ClientPeer:
    __slots__ = ("peer_id",)

    def __init__(self, peer_id: bytes) -> None:
        self.peer_id = peer_id


class _WorkerPeer(_ClientPeer):
    __slots__ = ()


class _ProcessorPeer(_ClientPeer):
    """A worker's processor: its tasks' way in and out (``worker_host.py``)."""

    __slots__ = ("host",)

    def __init__(self, peer_id: bytes, host: WorkerHost) -> None:
        super().__init__(peer_id)
        self.host = host


class _ManagerPeer(_ClientPeer):
    __slots__ = ("manager_id", "last_seen")

    def __init__(self, peer_id: bytes, manager_id: str, now: float) -> None:
        super().__init__(peer_id)
        self.manager_id = manager_id
        self.last_seen = now


class SchedulerServer(Handler):
    def __init__(self, loop: EventLoop, config: SchedulerConfig, sock: socket.socket,
                 storage_sock: Optional[socket.socket] = None, monitor_sock: Optional[socket.socket] = None,
                 bind_monitor: bool = True) -> None:
        self.loop = loop
        self.started_at = time.monotonic()
        self.config = config
        self.address = parse_address(config.address)
        key = normalize_key(config.auth_key)
        self.peers: Dict[bytes, Connection] = {}
        self.hosts: Dict[bytes, WorkerHost] = {}  # worker id -> its task pipeline (worker_host.py)
        # Workers whose processor does not have its next task at hand: while there are none,
        # the loop thread runs under SCHED_BATCH (utility/cpu_policy.py).
        self._short_of_work = 0
        self.cpu_policy = BatchPolicy()
        if loop.spinner is None and loop.lock is None:
            spinner = Spinner()
            if spinner.budget > 0:
                loop.spinner = spinner  # io/spin.py: poll a little before sleeping, while answers come quickly
        self.store: Optional[ObjectStore] = None
        self.storage_server: Optional[ObjectStorageServer] = None
        self._storage_link: Optional[Connection] = None
        self._tls: Any = None  # the server context of the tls:// addresses, made once
        if config.object_storage_address is None or storage_sock is not None:
            storage_address = (parse_address(config.object_storage_address) if config.object_storage_address
                               else self.address.with_port_offset(1))
            if storage_sock is None:
                storage_sock = listen(storage_address)
            self.store = ObjectStore(config.object_storage_max_bytes)
            self.storage_server = ObjectStorageServer(loop, storage_sock, str(storage_address), key, self.store,
                                                      tls=self._tls_for(storage_address))
        else:
            storage_address = parse_address(config.object_storage_address)
        self.storage_address = storage_address
        self.storage_outage = Outage(logger, "object storage at %s unreachable" % (storage_address,))
        self._key = key
        self.policy = parse_policy(config.policy_content)
        self.state = SchedulerState(self._send, self._free_owner, self._free_objects,
                                    max_task_retries=config.max_task_retries,
                                    client_timeout_seconds=config.client_timeout_seconds,
                                    worker_timeout_seconds=config.worker_timeout_seconds,
                                    route_by_capability=self.policy.allocate == "capability",
                                    max_tasks_waiting=config.max_number_of_tasks_waiting)
        self.managers = ManagerTable(self.state, self.policy, self._schedule_dispatch)
        self.listener = Listener(loop, sock, self, address=config.address, auth_key=key,
                                 allowed_roles=(ROLE_CLIENT, ROLE_WORKER, ROLE_MANAGER), evict_unregistered=True,
                                 tls=self._tls_for(self.address))
        self._dispatch_scheduled = False
        self._balance_scheduled = False
        self.stopping = False
        loop.call_every(TIMEOUT_CHECK_SECONDS, self._check_timeouts)
        loop.call_every(TASK_TIMEOUT_CHECK_SECONDS, self._check_task_timeouts)
        loop.call_every(SCALING_INTERVAL_SECONDS, lambda: self.managers.tick(time.monotonic()))
        if config.load_balance_seconds > 0:
            loop.call_every(config.load_balance_seconds, self.state.balance)
        self.webhooks: Optional[WebhookWorker] = None
        if config.adapter_webhook_urls:
            self.webhooks = WebhookWorker(loop.call_soon_threadsafe)
            for url in config.adapter_webhook_urls:
                self._probe_webhook(url)
        if self.store is None:
            self._link_storage()
        self.monitor: Optional[MonitorServer] = None
        self._meter = ProcessMeter()
        self._rates = RateMeter(self.started_at, totals_of(self.state))
        if monitor_sock is None and bind_monitor:
            monitor_sock = open_monitor_socket(config)
        if monitor_sock is not None:
            monitor_address = monitor_address_of(config)
            self.monitor_address = str(monitor_address)
            self.monitor = MonitorServer(loop, monitor_sock, self.monitor_address, key, self.status,
                                         config.status_report_interval_seconds, self._update_rates,
                                         tls=self._tls_for(monitor_address))
        exposure = exposure_warning("scheduler", [self.address] + ([storage_address] if self.store is not None
                                                                   else []), key)
        if exposure:
            logger.warning(exposure)
        logger.info("scheduler %s listening on %s, object storage %s%s", __version__, config.address,
                    storage_address, " (in-process)" if self.store is not None else "")

    def _tls_for(self, address: Address) -> Any:
        """The TLS server context for a listener on ``address`` (None for tcp:// and ipc://)."""
        if not address.is_tls:
            return None
        if self._tls is None:
            from ..io.tls import server_context
            if not self.config.tls_cert or not self.config.tls_key:
                raise ValueError("%s is a tls:// address: give --tls-cert and --tls-key" % address)
            self._tls = server_context(self.config.tls_cert, self.config.tls_key)
        return self._tls

    # --- monitor ---
    def _update_rates(self) -> None:
        self._rates.update(time.monotonic(), totals_of(self.state))

    def status(self) -> dict:
        """The status snapshot (``status.build_snapshot``) with this process's figures."""
        now = time.monotonic()
        self._rates.update(now, totals_of(self.state), 0.25 * self.config.status_report_interval_seconds)
        cpu, rss = self._meter.sample()
        figures = {"address": self.config.address, "pid": os.getpid(), "version": __version__,
                   "cpu": round(cpu, 1), "rss": rss, "uptime": round(now - self.started_at, 3),
                   "protected": self.config.protected, "policy": self.config.policy_content,
                   "monitor_address": self.monitor_address if self.monitor is not None else "",
                   "status_interval": self.config.status_report_interval_seconds}
        return build_snapshot(self.state, now=now, wall_time=time.time(), scheduler=figures,
                              rates=self._rates.rates, managers=self.managers, policy=self.policy, store=self.store,
                              storage_address=str(self.storage_address))

    # --- object storage side effects ---
    def _free_owner(self, owner_id: bytes) -> None:
        if self.store is not None:
            self.store.delete_owner(owner_id)
        elif self._storage_link is not None and self._storage_link.opened:
            self._storage_link.send(ObjectDeleteOwner(owner_id))

    def _free_objects(self, object_ids: List[bytes]) -> None:
        if self.store is not None:
            self.store.delete(object_ids)
        elif self._storage_link is not None and self._storage_link.opened:
            self._storage_link.send(ObjectDelete(object_ids))

    def _link_storage(self) -> None:
        if self.stopping:
            return
        try:
            self._storage_link = Connection.dial(self.loop, connectable_host(self.storage_address),
                                                 _StorageLink(self), ROLE_SCHEDULER, self._key,
                                                 tls_ca=self.config.tls_ca)
        except OSError as exc:
            logger.warning("cannot reach object storage at %s: %s", self.storage_address, exc)
            self.loop.call_later(1.0, self._link_storage)

    # --- routing ---
    def _send(self, peer_id: bytes, msg: Message) -> None:
        host = self.hosts.get(peer_id)
        if host is not None:
            host.deliver(msg)  # to a worker: through its pipeline, to its processor
            return
        conn = self.peers.get(peer_id)
        if conn is not None:
            conn.send(msg)

    def _lined_up(self, lined_up: bool) -> None:
        self._short_of_work += -1 if lined_up else 1
        self._follow_saturation()

    def _follow_saturation(self) -> None:
        saturated = self._short_of_work == 0 and bool(self.hosts)
        self.cpu_policy.set(saturated)
        if self.loop.spinner is not None:
            # every processor has its next task at hand: the CPUs are theirs, not a poller's
            self.loop.spinner.enabled = not saturated

    def _worker_result(self, worker_id: bytes, msg: Message) -> None:
        state = self.state
        state.task_result(worker_id, msg)
        self._schedule_dispatch()
        if state.went_idle:
            state.went_idle = False
            if self.config.load_balance_seconds > 0 and not self._balance_scheduled:
                self._balance_scheduled = True  # once per loop iteration, after the dispatch
                self.loop.call_soon(self._balance_now)

    def _schedule_dispatch(self) -> None:
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            self.loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        self.state.dispatch()

    def _balance_now(self) -> None:
        self._balance_scheduled = False
        self.state.balance()

    # A processor's results and a client's submissions that arrive back to back are taken
    # whole (see Handler.batch_types): per read, not per message.
    batch_types = frozenset((TaskResult, TaskSubmit))

    def batch_received(self, conn: Connection, msgs: List[Message]) -> None:
        peer = conn.data
        kind = type(msgs[0])
        if type(peer) is _ProcessorPeer:
            peer.host.processor_batch(conn, msgs)
        elif kind is TaskSubmit and type(peer) is _ClientPeer:
            client_id = peer.peer_id
            state = self.state
            state.client_seen(client_id, time.monotonic())
            submitted = state.task_submitted
            for msg in msgs:
                if conn.closed:
                    break
                submitted(client_id, msg.task_id, msg.flags, msg.func_id, msg.call, msg.capabilities, msg.priority)
            self._schedule_dispatch()
        else:
            for msg in msgs:
                if conn.closed:
                    return
                self.message_received(conn, msg)

    def message_received(self, conn: Connection, msg: Message) -> None:
        peer = conn.data
        kind = type(msg)
        now = time.monotonic()
        if type(peer) is _ClientPeer:
            client_id = peer.peer_id
            self.state.client_seen(client_id, now)
            if kind is TaskSubmit:
                self.state.task_submitted(client_id, msg.task_id, msg.flags, msg.func_id, msg.call, msg.capabilities,
                                          msg.priority)
                self._schedule_dispatch()
            elif kind is GraphSubmit:
                self._graph_submitted(client_id, msg)
            elif kind is Heartbeat:
                conn.send(HeartbeatEcho(msg.sent_at))
            elif kind is TaskCancel:
                self.state.task_cancel_requested(client_id, msg.task_id)
            elif kind is ObjectDeleteOwner:  # Client.clear(): only ever for itself
                if msg.owner_id != client_id:
                    conn.close("ObjectDeleteOwner for another client")
                else:
                    self.state.client_cleared(client_id)
            elif kind is ClientDisconnect:
                if msg.shutdown:
                    self._shutdown_requested(conn)
                else:
                    conn.close("client disconnected")
            else:
                conn.close("unexpected %s from a client" % kind.__name__)
        elif type(peer) is _ProcessorPeer:
            peer.host.processor_message(conn, msg)
        elif type(peer) is _WorkerPeer:
            worker_id = peer.peer_id
            host = self.hosts[worker_id]
            if kind is WorkerObjectReady:
                host.object_ready(msg.object_id, msg.found)
            elif kind is WorkerProcessorExited:
                host.processor_exited(msg.pid, msg.detail)
            elif kind is WorkerObjectStored:
                host.object_stored(msg.object_id, msg.error)
            elif kind is WorkerHeartbeat:
                self.state.worker_heartbeat(worker_id, now, len(host.pipeline), msg.rss, msg.cpu)
                conn.send(HeartbeatEcho(msg.sent_at))
            elif kind is WorkerStatus:
                pipeline = host.pipeline  # (the pipeline is here now: what runs is known here)
                msg.running = 1 if pipeline.inflight() else 0
                msg.suspended = pipeline.blocked_count()
                self.state.worker_status(worker_id, msg)
            elif kind is WorkerDisconnect:
                conn.close("worker left: %s" % (msg.reason or "shutting down"))
            else:
                conn.close("unexpected %s from a worker" % kind.__name__)
        elif type(peer) is _ManagerPeer:
            peer.last_seen = now
            if kind is ManagerHeartbeat:
                conn.send(HeartbeatEcho(msg.sent_at))
            elif kind is WorkerGroupStarted:
                self.managers.group_started(peer.manager_id, msg.request_id, msg.ok, msg.group_id, msg.reason)
            elif kind is WorkerGroupStopped:
                self.managers.group_stopped(peer.manager_id, msg.group_id, msg.ok,
                                            msg.refusal == Refusal.UNKNOWN_GROUP.value, msg.reason)
            else:
                conn.close("unexpected %s from a worker manager" % kind.__name__)
        else:
            self._register(conn, msg, now)

    def _graph_submitted(self, client_id: bytes, msg: Message) -> None:
        try:
            deps = [unpack_indices(bytes(blob)) for blob in msg.deps]
        except ValueError as exc:
            deps = [[len(msg.task_ids)]] * len(msg.task_ids)  # refused below, naming the problem
            logger.warning("malformed graph from client %s: %s", short_id(client_id), exc)
        if self.state.graph_submitted(client_id, msg.task_ids, bytes(msg.flags), msg.func_ids, msg.calls, deps,
                                      [bool(b) for b in bytes(msg.requested)], msg.priority):
            self._schedule_dispatch()

    def _register(self, conn: Connection, msg: Message, now: float) -> None:
        kind = type(msg)
        if conn.peer_role == ROLE_CLIENT and kind is ClientConnect:
            if len(msg.client_id) == 0 or msg.client_id in self.peers:
                conn.close("duplicate or empty client id")
                return
            conn.data = _ClientPeer(msg.client_id)
            conn.max_write_backlog = CLIENT_WRITE_LIMIT  # results for a client that stopped reading
            self.peers[msg.client_id] = conn
            self.state.client_connected(msg.client_id, now)
            conn.send(ClientConnectReply(str(self.storage_address), self.config.protected, __version__))
            logger.debug("client %s connected from %s", short_id(msg.client_id), conn.peer)
        elif conn.peer_role == ROLE_WORKER and kind is WorkerConnect:
            if len(msg.worker_id) == 0 or msg.worker_id in self.peers:
                conn.close("duplicate or empty worker id")
                return
            try:
                capability_names(msg.capabilities)
            except ValueError as exc:
                logger.warning("refused worker %s from %s: %s", msg.name, conn.peer, exc)
                conn.close("invalid capabilities: %s" % exc)
                return
            conn.data = _WorkerPeer(msg.worker_id)
            self.peers[msg.worker_id] = conn
            self.hosts[msg.worker_id] = WorkerHost(msg.worker_id, conn, self._worker_result, self.state.task_output,
                                                   self.loop.call_soon, self.loop.call_later, msg.task_timeout,
                                                   msg.processor_token, on_lined_up=self._lined_up)
            self._short_of_work += 1
            self._follow_saturation()
            queue_size = min(msg.queue_size, self.config.per_worker_queue_size)
            info = WorkerInfo(msg.worker_id, msg.name, queue_size, msg.capabilities, msg.pid, msg.manager_id, now)
            info.host = _host_of(conn.peer)
            self.state.worker_connected(info)
            conn.send(WorkerConnectReply(str(self.storage_address)))
            self.managers.worker_connected(msg.worker_id, msg.name)
            logger.debug("worker %s (pid %d) connected from %s", msg.name, msg.pid, conn.peer)
            self._schedule_dispatch()
            if self.config.load_balance_seconds > 0:
                self.loop.call_soon(self.state.balance)  # a new, idle worker: share the others' queues
        elif conn.peer_role == ROLE_WORKER and kind is ProcessorConnect:
            host = self.hosts.get(msg.worker_id)
            if host is None or not host.admits(msg.token):
                conn.close("a processor of no worker connected here (or with the wrong token)")
                return
            conn.data = _ProcessorPeer(b"processor|" + msg.worker_id, host)
            host.attach(conn, msg.pid)
        elif conn.peer_role == ROLE_MANAGER and kind is ManagerConnect:
            manager_id = msg.manager_id
            try:
                names = capability_names(msg.capabilities)
            except ValueError as exc:
                logger.warning("worker manager %s sent invalid capabilities (%s): ignoring them", manager_id, exc)
                names = frozenset()
            record = ManagerRecord(manager_id, msg.capacity, msg.mode,
                                   lambda request_id: conn.send(StartWorkerGroup(request_id)),
                                   lambda group_id: conn.send(ShutdownWorkerGroup(group_id)), "native", names)
            refusal = self.managers.add(record)
            if refusal:
                logger.warning("refused worker manager from %s: %s", conn.peer, refusal)
                conn.send(ManagerConnectReply(False, refusal, self.policy.scaling))
                conn.close_after_flush()
                return
            peer_id = b"manager|" + manager_id.encode()
            conn.data = _ManagerPeer(peer_id, manager_id, now)
            self.peers[peer_id] = conn
            conn.send(ManagerConnectReply(True, "", self.policy.scaling))
        else:
            conn.close("expected a connect message, got %s" % kind.__name__)

    def connection_open(self, conn: Connection) -> None:
        self.loop.call_later(REGISTRATION_TIMEOUT_SECONDS, lambda: self._registration_deadline(conn))

    def _registration_deadline(self, conn: Connection) -> None:
        if conn.data is None and not conn.closed:
            logger.warning("closing %s: authenticated but did not register within %.0f s", conn.peer,
                           REGISTRATION_TIMEOUT_SECONDS)
            conn.close("did not register in time")

    def connection_closed(self, conn: Connection, reason: str) -> None:
        peer = conn.data
        if peer is None:
            return
        if type(peer) is _ProcessorPeer:
            peer.host.processor_closed(conn, reason)
            return
        self.peers.pop(peer.peer_id, None)
        if type(peer) is _ClientPeer:
            self.state.client_disconnected(peer.peer_id, reason)
        elif type(peer) is _ManagerPeer:
            self.managers.remove(peer.manager_id, reason)
        else:
            host = self.hosts.pop(peer.peer_id, None)
            if host is not None:
                if not host.lined_up:
                    self._short_of_work -= 1
                host.close()
                self._follow_saturation()
            worker = self.state.workers.get(peer.peer_id)
            if worker is not None:
                if not self.stopping:
                    logger.debug("worker %s disconnected: %s", worker.name, reason)
                self.managers.worker_disconnected(peer.peer_id, worker.group_id)
            self.state.worker_disconnected(peer.peer_id, reason)
            self._schedule_dispatch()

    # --- webhook-driven managers ---
    def _probe_webhook(self, url: str) -> None:
        if self.stopping or self.webhooks is None:
            return

        def answered(status: int, reply: dict) -> None:
            if status != 200:
                logger.warning("worker adapter at %s: %s; retrying in %.0fs", url,
                               reply.get("error", "HTTP %d" % status), RETRY_SECONDS)
                self.loop.call_later(RETRY_SECONDS, lambda: self._probe_webhook(url))
                return
            manager_id = str(reply.get("worker_manager_id") or url)
            try:
                capacity = int(reply.get("max_worker_groups", -1))
            except (TypeError, ValueError):
                capacity = -1
            record = ManagerRecord(manager_id, capacity, str(reply.get("mode", "webhook")),
                                   lambda request_id: self._webhook_start(url, manager_id, request_id),
                                   lambda group_id: self._webhook_stop(url, manager_id, group_id), url,
                                   _names_of(reply.get("base_capabilities")))
            refusal = self.managers.add(record)
            if refusal:
                logger.warning("worker adapter at %s: %s", url, refusal)

        self.webhooks.request(url, {"action": "get_worker_adapter_info"}, answered)

    def _webhook_start(self, url: str, manager_id: str, request_id: int) -> None:
        def answered(status: int, reply: dict) -> None:
            group_id = str(reply.get("worker_group_id", ""))
            reason = str(reply.get("error") or reply.get("status") or "HTTP %d" % status)
            self.managers.group_started(manager_id, request_id, status == 200 and bool(group_id), group_id, reason)

        self.webhooks.request(url, {"action": "start_worker_group"}, answered)

    def _webhook_stop(self, url: str, manager_id: str, group_id: str) -> None:
        def answered(status: int, reply: dict) -> None:
            reason = str(reply.get("error") or reply.get("status") or "HTTP %d" % status)
            self.managers.group_stopped(manager_id, group_id, status == 200, status == 404, reason)

        self.webhooks.request(url, {"action": "shutdown_worker_group", "worker_group_id": group_id}, answered)

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for peer_id in list(self.state.expired_peers(now)):
            conn = self.peers.get(peer_id)
            if conn is not None:
                conn.close("no heartbeat for too long")
        for conn in list(self.peers.values()):
            peer = conn.data
            if type(peer) is _ManagerPeer and now - peer.last_seen > self.config.worker_timeout_seconds:
                conn.close("no heartbeat from worker manager for too long")

    def _check_task_timeouts(self) -> None:
        for host in list(self.hosts.values()):
            if host.task_timeout > 0:
                task_id = host.check_timeout()
                if task_id is not None:
                    worker = self.state.workers.get(host.worker_id)
                    logger.warning("task %s ran longer than %gs on worker %s: stopped", task_id.hex(),
                                   host.task_timeout, worker.name if worker is not None else "?")

    def _shutdown_requested(self, conn: Connection) -> None:
        if self.config.protected:
            conn.send(ShutdownRefused("Scheduler is in protected mode. Can't shutdown"))
            return
        logger.info("shutdown requested by a client")
        self.stop("shutdown requested by a client")

    def stop(self, reason: str) -> None:
        """Tell every peer, flush, then stop the loop."""
        if self.stopping:
            return
        self.stopping = True
        self.state.shutdown_everyone(reason)
        for peer_id, conn in self.peers.items():
            if type(conn.data) is _ManagerPeer:
                conn.send(SchedulerShutdown(reason))
        for conn in list(self.peers.values()):
            conn.close_after_flush()
        self.loop.call_later(0.05, self.loop.stop)

    def close(self) -> None:
        self.listener.close()
        if self.monitor is not None:
            self.monitor.close()
        if self.webhooks is not None:
            self.webhooks.close()
        if self.storage_server is not None:
            self.storage_server.close()


class _StorageLink(Handler):
    """The scheduler's own connection to a separate object storage server (for deletions)."""

    def __init__(self, server: SchedulerServer) -> None:
        self.server = server

    def message_received(self, conn: Connection, msg: Message) -> None:
        pass

    def connection_open(self, conn: Connection) -> None:
        self.server.storage_outage.recovered()

    def connection_closed(self, conn: Connection, reason: str) -> None:
        if not self.server.stopping:
            self.server.storage_outage.failed(reason)
            self.server.loop.call_later(1.0, self.server._link_storage)


def run_scheduler(config: SchedulerConfig, sock: Optional[socket.socket] = None,
                  storage_sock: Optional[socket.socket] = None, lifeline_fd: Optional[int] = None,
                  monitor_sock: Optional[socket.socket] = None, bind_monitor: bool = True) -> None:
    """Run a scheduler until SIGINT/SIGTERM, a client's shutdown, or the parent's death."""
    from ..utility.process import exit_soon_after, on_stop_signals, watch_lifeline

    loop = EventLoop()
    stop_requested: List[str] = []

    def stop_from_signal(_signum: int) -> None:
        stop_requested.append("scheduler stopped by signal")
        loop.call_soon_threadsafe(lambda: server.stop(stop_requested[0]))

    on_stop_signals(stop_from_signal)  # before anything is bound, so no signal finds us defenceless
    if sock is None:
        sock = listen(parse_address(config.address))
    server = SchedulerServer(loop, config, sock, storage_sock, monitor_sock, bind_monitor)
    watch_lifeline(lifeline_fd, lambda: (exit_soon_after(5.0),
                                         loop.call_soon_threadsafe(lambda: server.stop("parent exited"))))
    try:
        loop.run()
    finally:
        server.close()
        loop.close()
        if server.address.scheme == "ipc":
            _unlink_quietly(server.address)
        if server.store is not None and server.storage_address.scheme == "ipc":
            _unlink_quietly(server.storage_address)
        if server.monitor is not None and server.monitor_address.startswith("ipc://"):
            _unlink_quietly(parse_address(server.monitor_address))
        logger.debug("scheduler stopped")


def _host_of(peer: str) -> str:
    """The host part of a connection's peer ("127.0.0.1:5000"; a Unix socket: "local")."""
    host, sep, port = peer.rpartition(":")
    if not sep or not port.isdigit() or "/" in peer:
        return "local"
    return host


def _names_of(capabilities: object) -> FrozenSet[str]:
    """The names of a webhook adapter's ``base_capabilities`` map (anything else: none)."""
    if not isinstance(capabilities, dict):
        return frozenset()
    return frozenset(name for name in capabilities if isinstance(name, str))


def _unlink_quietly(address: Address) -> None:
    import os
    try:
        os.unlink(address.path)
    except OSError:
        pass
