"""The worker agent: joins the scheduler for the worker, and supervises its processor.

A task does not pass through here: the processor, once the agent has joined, connects to
the scheduler itself, which keeps the worker's task pipeline (``scheduler/worker_host.py``)
and sends it tasks directly. The agent holds the worker's registration and heartbeats, the
connection to object storage (it fetches the objects the scheduler tells it the processor
will need and passes them on, and stores the results the processor hands it), and starts,
replaces and reports on the processor.
"""

import collections
import logging
import os
import signal
import socket
import time
from typing import Deque, Dict, List, Optional, Set

from ..config.components import WorkerConfig
from ..io import shm
from ..io.address import connectable_host, parse_address
from ..io.connection import Connection, Handler
from ..io.fd_connection import FdConnection
from ..io.loop import EventLoop
from ..protocol.codec import Buffer, Message
from ..protocol.handshake import normalize_key
from ..protocol.messages import (ROLE_WORKER, HeartbeatEcho, ObjectGet, ObjectGetBytes, ObjectGetReply, ObjectGetShm,
                                 ObjectPut, ObjectPutReply, ObjectPutShm, ObjectShmAccept, ObjectShmOffer,
                                 ObjectShmReady, ProcessorDial, ProcessorDropObjects, ProcessorObject,
                                 ProcessorObjectShm, ProcessorReady, ProcessorStore,
                                 SchedulerShutdown, WorkerConnect, WorkerConnectReply, WorkerDisconnect,
                                 WorkerDropObjects, WorkerFetchObject, WorkerHeartbeat, WorkerObjectReady,
                                 WorkerObjectStored, WorkerProcessorExited, WorkerRestartProcessor)
from ..utility import process as proc_util
from ..utility.outage import Outage
from .status_report import StatusReporter

logger = logging.getLogger(__name__)

RECONNECT_INTERVAL_SECONDS = 1.0
PRELOAD_FAILED_EXIT = 3
SCHEDULER_LEFT_EXIT = 5  # the processor's, when its connection to the scheduler ends (processor.py)
PROCESSOR_COMM = "scaler-proc"  # the name of a forked processor (its command line is its agent's)


class WorkerAgent:
    def __init__(self, loop: EventLoop, config: WorkerConfig) -> None:
        self.loop = loop
        self.config = config
        self.key = normalize_key(config.auth_key or proc_util.auth_key_from_env())
        self.scheduler_address = parse_address(config.scheduler_address)
        self.worker_id = os.urandom(16)  # random, as a uuid4 (the uuid module is a few ms to import)
        self.name = config.name or "%s|%s" % (socket.gethostname(), self.worker_id.hex()[:8])
        self.exit_code = 0
        self.stopping = False
        # Never shorter than a few heartbeats: the echo of one heartbeat must be able to
        # arrive before the next check, or a healthy worker would give up.
        self.death_timeout = max(config.death_timeout_seconds, 3 * config.heartbeat_interval_seconds)

        self.scheduler: Optional[Connection] = None
        self.storage: Optional[Connection] = None
        # Shared memory with the object storage (scaler/io/shm.py), once it offered and we proved
        # we are on its host; results put through a memfd wait here for their acknowledgement.
        self.shm_reads = False
        self.shm_puts = False
        self.storage_pid = 0
        self._shm_probe: Optional[shm.Probe] = None
        self._shm_stored: Dict[bytes, shm.Segment] = {}
        self.registered = False
        self.last_contact = time.monotonic()
        self.processor_token = os.urandom(16)  # what our processors show the scheduler (WorkerConnect)
        self._storing: Set[bytes] = set()  # results the processor handed us, being stored

        self.storage_outage = Outage(logger, "object storage unreachable")
        self.cpu = proc_util.CpuMeter()

        self.processor: Optional[proc_util.Child] = None
        self.processor_conn: Optional[Connection] = None
        self.processor_ready = False  # it said ProcessorReady: it can be told to join the scheduler
        self.processor_dialed = False  # it was told to (ProcessorDial)
        self.processor_failures: Deque[float] = collections.deque(maxlen=5)
        self.status_reporter = StatusReporter()  # figures for monitors, sent with each heartbeat

    def start(self) -> None:
        """Start the processor and dial the scheduler. Not in ``__init__``: whoever runs the
        agent installs its stop handling first and calls this inside the ``try`` whose
        ``finally`` calls :meth:`shutdown`, so a stop landing at any moment of start-up
        still reaps the processor (a SIGTERM between the spawn and that ``try`` used to
        leave it an orphan)."""
        if self.processor is None:
            self._start_processor()
        self._connect_scheduler()
        config = self.config
        self.loop.call_every(config.heartbeat_interval_seconds, self._heartbeat)

    def start_first_processor(self) -> None:
        """Start the first processor by forking this process, while that is safe and cheap: no
        thread yet, nothing open but the processor's channel (a new interpreter and its imports
        are most of a worker's start-up). Call it first, inside the same ``try`` as :meth:`start`."""
        self._start_processor(fork=True)

    # --- scheduler link ---
    def _connect_scheduler(self) -> None:
        if self.stopping:
            return
        try:
            self.scheduler = Connection.dial(self.loop, connectable_host(self.scheduler_address),
                                             _Link(self, "scheduler"), ROLE_WORKER, self.key,
                                             tls_ca=self.config.tls_ca)
        except OSError as exc:
            logger.debug("cannot connect to scheduler: %s", exc)
            self._scheduler_lost(str(exc))

    def _scheduler_lost(self, reason: str, handshake_failure: Optional[str] = None) -> None:
        self.registered = False
        if self.stopping:
            return
        if handshake_failure:  # wrong key, other protocol version, TLS...: retrying cannot help
            logger.error("cannot join the scheduler: %s", handshake_failure)
            self.stop(2)
            return
        # What the processor runs belongs to a scheduler that no longer knows us.
        if self.processor_conn is not None and self.processor_dialed:
            logger.warning("lost the scheduler (%s): replacing the processor", reason)
            self.restart_processor("scheduler lost")
        if time.monotonic() - self.last_contact > self.death_timeout:
            logger.error("no scheduler for %.0fs (death timeout): exiting", self.death_timeout)
            self.stop(1)
            return
        self.loop.call_later(RECONNECT_INTERVAL_SECONDS, self._connect_scheduler)

    def scheduler_open(self, conn: Connection) -> None:
        self.last_contact = time.monotonic()
        conn.send(WorkerConnect(self.worker_id, self.name, self.config.per_worker_task_queue_size,
                                self.config.per_worker_capabilities, os.getpid(), self.config.manager_id,
                                max(0.0, self.config.task_timeout_seconds), self.processor_token))

    def scheduler_message(self, conn: Connection, msg: Message) -> None:
        self.last_contact = time.monotonic()
        kind = type(msg)
        if kind is WorkerFetchObject:
            if self.storage is not None:
                self.storage.send(ObjectGet(msg.object_id))
            else:
                conn.send(WorkerObjectReady(msg.object_id, False))
        elif kind is WorkerDropObjects:
            self.to_processor(ProcessorDropObjects(msg.object_ids))
        elif kind is HeartbeatEcho:
            pass
        elif kind is WorkerRestartProcessor:
            self.restart_processor(msg.reason)
        elif kind is WorkerConnectReply:
            self.registered = True
            storage = parse_address(self.config.object_storage_address or msg.object_storage_address)
            if storage.scheme != "ipc" and storage.host in ("0.0.0.0", "::"):
                storage = storage._replace(host=self.scheduler_address.host)
            if self.storage is None or self.storage.closed:
                self.storage = Connection.dial(self.loop, connectable_host(storage), _Link(self, "storage"),
                                               ROLE_WORKER, self.key, tls_ca=self.config.tls_ca)
            self._dial_processor()
        elif kind is SchedulerShutdown:
            logger.info("scheduler is shutting down (%s): exiting", msg.reason)
            self.stop(0, notify=False)
        else:
            logger.warning("unexpected %s from scheduler", kind.__name__)

    # --- storage link ---
    def storage_message(self, conn: Connection, msg: Message) -> None:
        kind = type(msg)
        if kind is ObjectGetReply:
            self._object_arrived(msg.object_id, msg.found, msg.payload)
        elif kind is ObjectGetShm:
            self._object_shared(msg)
        elif kind is ObjectPutReply:
            segment = self._shm_stored.pop(msg.object_id, None)
            if segment is not None:
                segment.close()  # the storage holds its own descriptor now
            if msg.object_id in self._storing:
                self._storing.discard(msg.object_id)
                self._stored(msg.object_id, msg.error)
        elif kind is ObjectShmOffer:
            self._shm_offer(conn, msg)
        elif kind is ObjectShmReady:
            self.shm_reads, self.shm_puts = msg.reads, msg.puts
            if self._shm_probe is not None:
                self._shm_probe.close()
                self._shm_probe = None

    def _shm_offer(self, conn: Connection, msg: Message) -> None:
        """Prove we are on the storage's host (read its nonce), and offer a probe of ours."""
        if not msg.token or not isinstance(self.processor_conn, FdConnection):
            return  # no shared memory there, or none here (SCALER_OBJECT_SHM=0)
        try:
            nonce = shm.read_probe(msg.pid, msg.fd, msg.token)
            self._shm_probe = probe = shm.Probe()
        except shm.ShmError as exc:
            logger.info("object storage: no shared memory (%s): objects come through the socket", exc)
            return
        self.storage_pid = msg.pid
        conn.send(ObjectShmAccept(nonce, os.getpid(), probe.fd, probe.token, probe.nonce))

    def _object_shared(self, msg: Message) -> None:
        """An object in the storage's shared memory: open it now (so it cannot go away before the
        processor maps it) and let the pipeline pass it on (``to_processor``)."""
        try:
            fd = shm.open_peer(self.storage_pid, msg.fd, msg.token, msg.offset + msg.size)
        except shm.ShmError as exc:
            logger.debug("fetching %s through the socket: %s", msg.object_id.hex(), exc)
            if self.storage is not None:
                self.storage.send(ObjectGetBytes(msg.object_id))
            return
        self._object_arrived(msg.object_id, True, _SharedObject(fd, msg.offset, msg.size))

    def _object_arrived(self, object_id: bytes, found: bool, payload: object) -> None:
        """Pass a fetched object on to the processor, then tell the scheduler, which sends the
        task that reads it only after that (on the processor's own connection)."""
        if found:
            self.to_processor(ProcessorObject(object_id, payload))
        if self.scheduler is not None and self.registered:
            self.scheduler.send(WorkerObjectReady(object_id, found))

    def storage_lost(self, reason: str, handshake_failure: Optional[str] = None) -> None:
        if self.stopping:
            return
        if handshake_failure:  # wrong key, TLS...: retrying cannot help
            logger.error("cannot use the object storage: %s", handshake_failure)
            self.stop(2)
            return
        self.storage_outage.failed(reason)
        self.storage = None
        self.shm_reads = self.shm_puts = False
        if self._shm_probe is not None:
            self._shm_probe.close()
            self._shm_probe = None
        stored, self._shm_stored = self._shm_stored, {}
        for segment in stored.values():
            segment.close()
        # Nothing can be fetched or stored any more: answer what waits on storage, then
        # leave the scheduler, which re-queues the rest elsewhere; we reconnect afresh.
        storing, self._storing = self._storing, set()
        for object_id in storing:
            self._stored(object_id, "object storage connection lost: %s" % reason)
        if self.scheduler is not None and self.scheduler.opened and not self.scheduler.closed:
            self.scheduler.close("object storage lost")

    # --- for the processor ---
    def store_object(self, object_id: bytes, owner_id: bytes, payload: Buffer) -> None:
        if type(payload) is shm.Segment:  # a result the processor handed over in a memfd
            if self.shm_puts:
                previous = self._shm_stored.get(object_id)
                if previous is not None:  # the same id again (a graph node run twice): the first is done with
                    previous.close()
                self._shm_stored[object_id] = payload
                self.storage.send(ObjectPutShm(object_id, owner_id, payload.fd, payload.token, payload.size))
                return
            payload = payload.detach()  # sent from the mapping, not copied first
        self.storage.send(ObjectPut(object_id, owner_id, payload))

    def to_processor(self, msg: Message) -> None:
        conn = self.processor_conn
        payload = getattr(msg, "payload", None)
        if type(payload) is _SharedObject:
            fd = payload.take()
            if isinstance(conn, FdConnection) and conn.send_with_fd(
                    ProcessorObjectShm(msg.object_id, payload.offset, payload.size), fd):
                return  # the descriptor is the connection's now
            segment = shm.Segment(fd, payload.offset + payload.size, "")
            if conn is None:
                segment.close()
                return
            msg = ProcessorObject(msg.object_id, segment.detach()[payload.offset:])  # through the socket, then
        if conn is not None:
            conn.send(msg)

    def restart_processor(self, why: str) -> None:
        logger.info("restarting processor: %s", why)
        self._stop_processor()
        self._start_processor()

    def processor_message(self, conn: Connection, msg: Message) -> None:
        kind = type(msg)
        if kind is ProcessorStore:
            self._store_for_processor(conn, msg)
        elif kind is ProcessorReady:
            if msg.error:
                logger.error("processor failed to start:\n%s", msg.error)
                self.stop(PRELOAD_FAILED_EXIT)
                return
            self.processor_ready = True
            self._dial_processor()
        else:
            conn.close("unexpected %s from the processor" % kind.__name__)

    def _stored(self, object_id: bytes, error: str) -> None:
        """Tell the scheduler how the put of a result went: it announces the result then."""
        if self.scheduler is not None and self.registered:
            self.scheduler.send(WorkerObjectStored(object_id, error))

    def _store_for_processor(self, conn: Connection, msg: Message) -> None:
        """A result to put into object storage (in a memfd when the message has a token)."""
        payload = msg.payload
        if msg.token:
            fd = conn.take_fd() if isinstance(conn, FdConnection) else None
            if fd is None:
                conn.close("a shared memory result came without its descriptor")
                return
            try:
                size = os.fstat(fd).st_size
            except OSError:
                size = 0
            payload = shm.Segment(fd, size, msg.token)
        if self.storage is None:
            if type(payload) is shm.Segment:
                payload.close()
            self._stored(msg.object_id, "no object storage connection")
            return
        self._storing.add(msg.object_id)
        self.store_object(msg.object_id, msg.owner_id, payload)

    def _dial_processor(self) -> None:
        """Once both are up, tell the processor to join the scheduler we joined."""
        if self.registered and self.processor_ready and not self.processor_dialed and self.processor_conn is not None:
            self.processor_dialed = True
            self.processor_conn.send(ProcessorDial(str(connectable_host(self.scheduler_address)), self.key or b"",
                                                   os.path.abspath(self.config.tls_ca) if self.config.tls_ca else "",
                                                   self.worker_id, self.processor_token))

    # --- processor ---
    def _start_processor(self, fork: bool = False) -> None:
        """Start a processor; with ``fork``, by forking this process when that is safe (see
        :func:`start_first_processor`), else as a new interpreter."""
        parent_sock, child_sock = socket.socketpair()
        args = ["--channel-fd", str(child_sock.fileno()), "--logging-level", self.config.logging_level,
                "--gc-interval", str(self.config.garbage_collect_interval_seconds),
                "--trim-threshold", str(self.config.trim_memory_threshold_bytes)]
        if self.config.preload:
            args += ["--preload", self.config.preload]
        extra = {"SCALER_SCHEDULER_ADDRESS": self.config.scheduler_address}  # Client() inside a task joins it
        if self.config.tls_ca:
            extra["SCALER_TLS_CA"] = os.path.abspath(self.config.tls_ca)  # and trusts whom this worker trusts
        if self.key is not None:
            try:
                extra[proc_util.AUTH_KEY_ENV] = self.key.decode("utf-8")
            except UnicodeDecodeError:
                pass  # a binary key given in Python: a Client() in a task must be given it
        env = proc_util.child_environment(extra)
        try:
            if fork and proc_util.can_fork():
                self.processor = proc_util.fork_child("processor", lambda lifeline_fd: _run_forked_processor(
                    parent_sock, [*args, "--lifeline-fd", str(lifeline_fd)], env), comm=PROCESSOR_COMM)
            else:
                self.processor = proc_util.spawn("processor", "worker.processor", args, env=env,
                                                 pass_fds=(child_sock.fileno(),))
        finally:
            child_sock.close()
        self.processor_ready = self.processor_dialed = False
        parent_sock.setblocking(False)
        # With shared memory, big objects and results cross the socketpair as memfds (SCM_RIGHTS).
        kind = FdConnection if shm.available() else Connection
        self.processor_conn = kind(self.loop, parent_sock, _Link(self, "processor"), peer="processor",
                                   handshake=False)

    def _stop_processor(self) -> None:
        conn, self.processor_conn = self.processor_conn, None
        if conn is not None:
            conn.data = "retired"
            conn.close("processor stopped")
        if self.processor is not None:
            self.processor.stop(grace_seconds=3.0, signum=signal.SIGKILL)
            self.processor = None

    def processor_lost(self, conn: Connection, reason: str) -> None:
        if conn.data == "retired" or self.stopping:
            return
        self.processor_conn = None
        pid = self.processor.pid if self.processor is not None else 0
        code = self.processor.stop(grace_seconds=3.0) if self.processor is not None else None
        self.processor = None
        detail = _describe_exit(code)
        if not self.processor_ready:
            logger.error("processor exited before it was ready (%s)", detail)
            self.stop(PRELOAD_FAILED_EXIT if code == PRELOAD_FAILED_EXIT else 1)
            return
        if code == SCHEDULER_LEFT_EXIT:  # the scheduler left, or dropped it
            logger.info("processor left: its connection to the scheduler ended")
        else:
            logger.warning("processor died (%s)", detail)
        if self.scheduler is not None and self.registered and pid:
            self.scheduler.send(WorkerProcessorExited(pid, detail))  # its running task fails with this
        now = time.monotonic()
        self.processor_failures.append(now)
        if len(self.processor_failures) == self.processor_failures.maxlen and now - self.processor_failures[0] < 1.0:
            delay = 1.0  # a crash loop: do not spin
        else:
            delay = 0.0
        self.loop.call_later(delay, self._start_if_none)

    def _start_if_none(self) -> None:
        """The delayed start after a death: unless one was started meanwhile (a restart)."""
        if self.processor is None and not self.stopping:
            self._start_processor()

    # --- time ---
    def _heartbeat(self) -> None:
        now = time.monotonic()
        if self.scheduler is not None and self.registered:
            processor_pid = self.processor.pid if self.processor is not None else None
            # (how many tasks it holds, runs and has blocked: the scheduler knows, it keeps the pipeline)
            self.scheduler.send(WorkerHeartbeat(time.time(), 0, proc_util.rss_bytes(),
                                                self.cpu.percent(processor_pid)))
            self.scheduler.send(self.status_reporter.report(processor_pid or 0, 0, 0))
        if now - self.last_contact > self.death_timeout:
            logger.error("no scheduler contact for %.0fs (death timeout): exiting", now - self.last_contact)
            self.stop(1)

    def stop(self, code: int = 0, notify: bool = True) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.exit_code = code
        if notify and self.scheduler is not None and self.registered:
            self.scheduler.send(WorkerDisconnect("worker stopping"))
            self.scheduler.close_after_flush()
        self.loop.call_later(0.05, self.loop.stop)

    def shutdown(self) -> None:
        self._stop_processor()


class _SharedObject:
    """An object the agent opened in the storage's shared memory, on its way to the processor:
    it travels through the pipeline as the payload of a ``ProcessorObject`` and is turned into a
    ``ProcessorObjectShm`` with its descriptor by ``to_processor``. The descriptor is closed
    here if the pipeline drops it (task cancelled meanwhile)."""

    __slots__ = ("fd", "offset", "size")

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self.fd = fd
        self.offset = offset
        self.size = size

    def __len__(self) -> int:
        return self.size

    def take(self) -> int:
        fd, self.fd = self.fd, -1
        return fd

    def __del__(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


class _Link(Handler):
    def __init__(self, agent: WorkerAgent, what: str) -> None:
        self.agent = agent
        self.what = what

    def connection_open(self, conn: Connection) -> None:
        if self.what == "scheduler":
            self.agent.scheduler_open(conn)
        elif self.what == "storage":
            self.agent.storage_outage.recovered()

    def message_received(self, conn: Connection, msg: Message) -> None:
        if self.what == "scheduler":
            self.agent.scheduler_message(conn, msg)
        elif self.what == "storage":
            self.agent.storage_message(conn, msg)
        else:
            self.agent.processor_message(conn, msg)

    def connection_closed(self, conn: Connection, reason: str) -> None:
        if self.what == "scheduler":
            if conn is self.agent.scheduler:
                self.agent._scheduler_lost(reason, getattr(conn, "failure", None))
        elif self.what == "storage":
            if conn is self.agent.storage:
                self.agent.storage_lost(reason, getattr(conn, "failure", None))
        else:
            self.agent.processor_lost(conn, reason)


def _run_forked_processor(parent_sock: socket.socket, args: List[str], env: Dict[str, str]) -> int:
    """The forked processor's entry: drop the agent's end of the channel, then run as one."""
    parent_sock.close()
    from .processor import main_forked
    return main_forked(args, env)


def _describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return "killed by signal %s" % signal.Signals(-code).name
        except ValueError:
            return "killed by signal %d" % -code
    return "exit code %d" % code


def run_worker(config: WorkerConfig, lifeline_fd: Optional[int] = None) -> int:
    """Run one worker (agent + processor) until told to stop; return the exit code."""
    loop = EventLoop()
    agent = WorkerAgent(loop, config)

    def stop_from_signal(_signum: int) -> None:
        loop.call_soon_threadsafe(agent.stop)

    proc_util.on_stop_signals(stop_from_signal)
    try:
        agent.start_first_processor()  # before the lifeline's thread: see there
        proc_util.watch_lifeline(lifeline_fd, lambda: (proc_util.exit_soon_after(5.0),
                                                       loop.call_soon_threadsafe(agent.stop)))
        agent.start()
        loop.run()
    finally:
        agent.shutdown()
        loop.close()
    return agent.exit_code


__all__ = ["WorkerAgent", "run_worker"]
