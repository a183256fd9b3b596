"""The worker agent: the scheduler's view of a worker.

It holds the connection to the scheduler (tasks in, results out, heartbeats), a queue of
prefetched tasks, and one processor subprocess that runs them in arrival order. Before a
task goes to the processor the agent fetches, from object storage, whatever objects
(function, serializer, large arguments) the processor does not have yet. Large results go
to object storage and only their id travels back.
"""

import collections
import logging
import os
import signal
import socket
import time
import uuid
from typing import Deque, Dict, List, Optional, Set

from ..config.components import WorkerConfig
from ..io.address import connectable_host, parse_address
from ..io.connection import Connection, Handler
from ..io.loop import EventLoop
from ..protocol.codec import Message, ProtocolError, decode
from ..protocol.handshake import normalize_key
from ..protocol.messages import (FLAG_NEEDS_OBJECTS, OBJECT_KINDS, ROLE_WORKER, TEMP_KINDS, ProcessorCancel, STATUS_CANCELLED, STATUS_MISSING_OBJECT, STATUS_OK,
                                 STATUS_OK_OBJECT, STATUS_PROCESSOR_DIED, HeartbeatEcho, ObjectDeleteOwner,
                                 ObjectGet, ObjectGetReply, ObjectPut, ObjectPutReply, ProcessorDropObjects,
                                 ProcessorObject, ProcessorReady, ProcessorTask, SchedulerShutdown, TaskResult,
                                 WorkerConnect, WorkerConnectReply, WorkerDisconnect, WorkerHeartbeat, WorkerTask,
                                 WorkerTaskCancel)
from ..utility import process as proc_util
from .status_report import StatusReporter

logger = logging.getLogger(__name__)

INLINE_RESULT_LIMIT = 64 * 1024  # results above this go through object storage
RECONNECT_INTERVAL_SECONDS = 1.0
PRELOAD_FAILED_EXIT = 3
PIPELINE_DEPTH = 16  # tasks sent ahead to the processor (which runs them in order) while tasks are short


HEAD_STALL_SECONDS = 0.001  # the running task has taken this long: stop queueing behind it


def pipeline_depth(task_seconds: float) -> int:
    """Short tasks: send many ahead (fewer wake-ups). Long ones: one at a time, so queued
    tasks stay in the agent where the scheduler can move them to idle workers."""
    if task_seconds < 0.002:
        return PIPELINE_DEPTH
    if task_seconds < 0.02:
        return 4
    return 1


class WorkerAgent:
    def __init__(self, loop: EventLoop, config: WorkerConfig, lifeline_fd: Optional[int] = None) -> None:
        self.loop = loop
        self.config = config
        self.key = normalize_key(config.auth_key or proc_util.auth_key_from_env())
        self.scheduler_address = parse_address(config.scheduler_address)
        self.worker_id = uuid.uuid4().bytes
        self.name = config.name or "%s|%s" % (socket.gethostname(), uuid.UUID(bytes=self.worker_id).hex[:8])
        self.exit_code = 0
        self.stopping = False
        # Never shorter than a few heartbeats: the echo of one heartbeat must be able to
        # arrive before the next check, or a healthy worker would give up.
        self.death_timeout = max(config.death_timeout_seconds, 3 * config.heartbeat_interval_seconds)

        self.scheduler: Optional[Connection] = None
        self.storage: Optional[Connection] = None
        self.registered = False
        self.last_contact = time.monotonic()

        self.queue: Dict[bytes, Message] = collections.OrderedDict()  # WorkerTask by task id, not yet sent
        # Tasks sent to the processor, in the order it runs them: the first one is running.
        self.inflight: Deque[_Inflight] = collections.deque()
        self.preparing: Optional[_Inflight] = None  # next task, waiting for objects from storage
        # Moving average of the processor's time per task; start by assuming tasks are slow.
        self.task_seconds = 0.1
        self.depth = pipeline_depth(self.task_seconds)
        self.last_result_at = 0.0
        self.object_owner: Dict[bytes, bytes] = {}  # objects the processor holds -> owning client
        self.pending_results: Dict[bytes, Message] = {}  # object id -> TaskResult waiting for its put ack

        self.processor: Optional[proc_util.Child] = None
        self.processor_conn: Optional[Connection] = None
        self.processor_ready = False
        self.processor_failures: Deque[float] = collections.deque(maxlen=5)
        self.status_reporter = StatusReporter()  # figures for monitors, sent with each heartbeat

        self._start_processor()
        self._connect_scheduler()
        loop.call_every(config.heartbeat_interval_seconds, self._heartbeat)

    # --- scheduler link ---
    def _connect_scheduler(self) -> None:
        if self.stopping:
            return
        try:
            self.scheduler = Connection.dial(self.loop, connectable_host(self.scheduler_address),
                                             _Link(self, "scheduler"), ROLE_WORKER, self.key)
        except OSError as exc:
            logger.debug("cannot connect to scheduler: %s", exc)
            self._scheduler_lost(str(exc))

    def _scheduler_lost(self, reason: str, handshake_failure: Optional[str] = None) -> None:
        self.registered = False
        if self.stopping:
            return
        if handshake_failure:  # wrong key, other protocol version...: retrying cannot help
            logger.error("scheduler refused this worker: %s", handshake_failure)
            self.stop(2)
            return
        # Whatever we held belongs to a scheduler that no longer knows us.
        held = len(self.queue) + len(self.inflight) + (self.preparing is not None)
        if held:
            logger.warning("lost the scheduler (%s): dropping %d task(s)", reason, held)
        self.queue.clear()
        self.preparing = None
        if self.inflight:
            self.inflight.clear()
            self._restart_processor("scheduler lost")
        if time.monotonic() - self.last_contact > self.death_timeout:
            logger.error("no scheduler for %.0fs (death timeout): exiting", self.death_timeout)
            self.stop(1)
            return
        self.loop.call_later(RECONNECT_INTERVAL_SECONDS, self._connect_scheduler)

    def scheduler_open(self, conn: Connection) -> None:
        self.last_contact = time.monotonic()
        conn.send(WorkerConnect(self.worker_id, self.name, self.config.per_worker_task_queue_size,
                                self.config.per_worker_capabilities, os.getpid(), self.config.manager_id))

    def scheduler_message(self, conn: Connection, msg: Message) -> None:
        self.last_contact = time.monotonic()
        kind = type(msg)
        if kind is WorkerTask:
            self.queue[msg.task_id] = msg
            if self.preparing is None and len(self.inflight) < self.depth:
                self._pump()  # (_pump applies the stall rule)
        elif kind is WorkerTaskCancel:
            self._cancel(msg.task_id, msg.force)
        elif kind is HeartbeatEcho:
            pass
        elif kind is ObjectDeleteOwner:
            self._drop_owner(msg.owner_id)
        elif kind is WorkerConnectReply:
            self.registered = True
            storage = parse_address(self.config.object_storage_address or msg.object_storage_address)
            if storage.scheme == "tcp" and storage.host in ("0.0.0.0", "::"):
                storage = storage._replace(host=self.scheduler_address.host)
            if self.storage is None or self.storage.closed:
                self.storage = Connection.dial(self.loop, connectable_host(storage), _Link(self, "storage"),
                                               ROLE_WORKER, self.key)
        elif kind is SchedulerShutdown:
            logger.info("scheduler is shutting down (%s): exiting", msg.reason)
            self.stop(0, notify=False)
        else:
            logger.warning("unexpected %s from scheduler", kind.__name__)

    # --- storage link ---
    def storage_message(self, conn: Connection, msg: Message) -> None:
        kind = type(msg)
        if kind is ObjectGetReply:
            self._object_arrived(msg)
        elif kind is ObjectPutReply:
            result = self.pending_results.pop(msg.object_id, None)
            if result is None:
                return
            if msg.error:
                result = TaskResult(result.task_id, STATUS_MISSING_OBJECT, b"",
                                    "could not store the result: %s" % msg.error)
            self._send_result(result)

    def storage_lost(self, reason: str) -> None:
        if self.stopping:
            return
        logger.warning("lost object storage (%s)", reason)
        self.storage = None
        # Nothing can be fetched or stored any more: answer what waits on storage, then
        # leave the scheduler, which re-queues the rest elsewhere; we reconnect afresh.
        for object_id in list(self.pending_results):
            result = self.pending_results.pop(object_id)
            self._send_result(TaskResult(result.task_id, STATUS_MISSING_OBJECT, b"",
                                         "object storage connection lost: %s" % reason))
        if self.scheduler is not None and self.scheduler.opened and not self.scheduler.closed:
            self.scheduler.close("object storage lost")

    # --- task flow ---
    def _pump(self) -> None:
        """Keep the processor's pipeline full: prepare queued tasks in order and send them."""
        while (self.preparing is None and self.queue and self.processor_ready
               and len(self.inflight) < self._depth_now()):
            _, task = self.queue.popitem(last=False)
            item = _Inflight(task)
            needed = [task.func_id]
            if task.flags & FLAG_NEEDS_OBJECTS:
                try:
                    call = decode(task.call)
                except ProtocolError as exc:
                    self._send_result(TaskResult(task.task_id, STATUS_MISSING_OBJECT, b"", "malformed task: %s" % exc))
                    continue
                if call.serializer_id:
                    needed.append(call.serializer_id)
                needed.extend(bytes(v) for k, v in zip(call.kinds, call.values) if k in OBJECT_KINDS)
                item.temp = [bytes(v) for k, v in zip(call.kinds, call.values) if k in TEMP_KINDS]
            missing = {object_id for object_id in needed if object_id not in self.object_owner}
            if not missing:
                self._send_to_processor(item)
                continue
            if self.storage is None or self.storage.closed:
                self._send_result(TaskResult(task.task_id, STATUS_MISSING_OBJECT, b"", "no object storage connection"))
                continue
            item.waiting = missing
            self.preparing = item
            for object_id in missing:
                self.storage.send(ObjectGet(object_id))

    def _depth_now(self) -> int:
        """No new task joins the pipe behind one that is taking long: it stays here, where the
        scheduler can still move it to an idle worker (a task waiting for its own sub-tasks
        would otherwise hold them hostage)."""
        if self.inflight and time.monotonic() - max(self.inflight[0].sent_at, self.last_result_at) > HEAD_STALL_SECONDS:
            return 1
        return self.depth

    def _object_arrived(self, msg: Message) -> None:
        item = self.preparing
        if item is None or msg.object_id not in item.waiting:
            return
        if not msg.found:
            self.preparing = None
            self._send_result(TaskResult(item.task.task_id, STATUS_MISSING_OBJECT, b"",
                                         "object %s is not in object storage (deleted, or its owner left)"
                                         % msg.object_id.hex()))
            self._pump()
            return
        item.waiting.discard(msg.object_id)
        self.object_owner[msg.object_id] = item.task.client_id
        self.processor_conn.send(ProcessorObject(msg.object_id, msg.payload))
        if not item.waiting:
            self.preparing = None
            self._send_to_processor(item)
            self._pump()

    def _send_to_processor(self, item: "_Inflight") -> None:
        task = item.task
        item.sent_at = time.monotonic()
        self.inflight.append(item)
        self.processor_conn.send(ProcessorTask(task.task_id, task.flags, task.func_id, task.call))

    def processor_message(self, conn: Connection, msg: Message) -> None:
        kind = type(msg)
        if kind is TaskResult:
            self._processor_result(msg)
        elif kind is ProcessorReady:
            if msg.error:
                logger.error("processor failed to start:\n%s", msg.error)
                self.stop(PRELOAD_FAILED_EXIT)
                return
            self.processor_ready = True
            self._pump()

    def _processor_result(self, result: Message) -> None:
        inflight = self.inflight
        if not inflight:
            return
        if inflight[0].task.task_id == result.task_id:
            item = inflight.popleft()
        else:  # should not happen (in-order), but never lose track of a task
            matches = [i for i in inflight if i.task.task_id == result.task_id]
            if not matches:
                return
            item = matches[0]
            inflight.remove(item)
        for object_id in item.temp:  # the processor used them once and let them go
            self.object_owner.pop(object_id, None)
        now = time.monotonic()
        self.task_seconds += 0.25 * (now - max(item.sent_at, self.last_result_at) - self.task_seconds)
        self.last_result_at = now
        self.depth = pipeline_depth(self.task_seconds)
        if not item.cancelled:
            if result.status == STATUS_OK and len(result.payload) > INLINE_RESULT_LIMIT and self.storage is not None:
                object_id = uuid.uuid4().bytes + uuid.uuid4().bytes
                self.pending_results[object_id] = TaskResult(result.task_id, STATUS_OK_OBJECT, object_id, "")
                self.storage.send(ObjectPut(object_id, item.task.client_id, result.payload))
            else:
                self._send_result(result)
        if self.preparing is None and self.queue:
            self._pump()

    def _send_result(self, result: Message) -> None:
        if self.scheduler is not None and self.registered:
            self.scheduler.send(result)

    def _cancel(self, task_id: bytes, force: bool) -> None:
        """Take back a task not started yet; with ``force`` also stop it if it runs."""
        if self.queue.pop(task_id, None) is not None:
            self._send_result(TaskResult(task_id, STATUS_CANCELLED, b"", "cancelled"))
            return
        if self.preparing is not None and self.preparing.task.task_id == task_id:
            self.preparing = None
            self._send_result(TaskResult(task_id, STATUS_CANCELLED, b"", "cancelled"))
            self._pump()
            return
        if not force:
            return  # already with the processor: it runs to completion
        for position, item in enumerate(self.inflight):
            if item.task.task_id != task_id or item.cancelled:
                continue
            self._send_result(TaskResult(task_id, STATUS_CANCELLED, b"", "cancelled"))
            if position == 0:  # running now: the only way to stop it is to replace the processor
                self.inflight.popleft()
                self._restart_processor("task cancelled while running")
            else:  # not started yet: the processor will skip it
                item.cancelled = True
                self.processor_conn.send(ProcessorCancel(task_id))
            return

    def _drop_owner(self, owner_id: bytes) -> None:
        ids = [object_id for object_id, owner in self.object_owner.items() if owner == owner_id]
        for object_id in ids:
            del self.object_owner[object_id]
        if ids and self.processor_conn is not None:
            self.processor_conn.send(ProcessorDropObjects(ids))

    # --- processor ---
    def _start_processor(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        args = ["--channel-fd", str(child_sock.fileno()), "--logging-level", self.config.logging_level,
                "--gc-interval", str(self.config.garbage_collect_interval_seconds),
                "--trim-threshold", str(self.config.trim_memory_threshold_bytes)]
        if self.config.preload:
            args += ["--preload", self.config.preload]
        env = proc_util.child_environment({"SCALER_SCHEDULER_ADDRESS": self.config.scheduler_address})
        try:
            self.processor = proc_util.spawn("processor", "worker.processor", args, env=env,
                                             pass_fds=(child_sock.fileno(),))
        finally:
            child_sock.close()
        parent_sock.setblocking(False)
        self.processor_ready = False
        self.object_owner = {}
        self.processor_conn = Connection(self.loop, parent_sock, _Link(self, "processor"),
                                         peer="processor", handshake=False)

    def _restart_processor(self, why: str) -> None:
        """Replace the processor; tasks it had not started go back to the front of the queue."""
        logger.info("restarting processor: %s", why)
        self._stop_processor()
        self._requeue_inflight()
        self._start_processor()

    def _requeue_inflight(self) -> None:
        waiting = [item.task for item in self.inflight if not item.cancelled]
        if self.preparing is not None:
            waiting.append(self.preparing.task)
            self.preparing = None
        self.inflight.clear()
        for task in reversed(waiting):
            self.queue[task.task_id] = task
            self.queue.move_to_end(task.task_id, last=False)

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
        code = self.processor.stop(grace_seconds=3.0) if self.processor is not None else None
        self.processor = None
        detail = _describe_exit(code)
        if not self.processor_ready:
            logger.error("processor exited before it was ready (%s)", detail)
            self.stop(PRELOAD_FAILED_EXIT if code == PRELOAD_FAILED_EXIT else 1)
            return
        logger.warning("processor died (%s)", detail)
        if self.inflight:
            running = self.inflight.popleft()
            if not running.cancelled:
                self._send_result(TaskResult(running.task.task_id, STATUS_PROCESSOR_DIED, b"",
                                             "processor died: %s" % detail))
        self._requeue_inflight()
        now = time.monotonic()
        self.processor_failures.append(now)
        if len(self.processor_failures) == self.processor_failures.maxlen and now - self.processor_failures[0] < 1.0:
            delay = 1.0  # a crash loop: do not spin
        else:
            delay = 0.0
        self.loop.call_later(delay, self._start_processor)

    # --- time ---
    def _heartbeat(self) -> None:
        now = time.monotonic()
        if self.scheduler is not None and self.registered:
            self.scheduler.send(WorkerHeartbeat(time.time(), len(self.queue) + len(self.inflight),
                                                proc_util.rss_bytes(), 0.0))
            self.scheduler.send(self.status_reporter.report(self.processor.pid if self.processor else 0,
                                                            1 if self.inflight else 0))
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


class _Inflight:
    __slots__ = ("task", "temp", "waiting", "cancelled", "sent_at")

    def __init__(self, task: Message) -> None:
        self.task = task
        self.sent_at = 0.0
        self.temp: List[bytes] = []  # one-use objects of this task
        self.waiting: Set[bytes] = set()  # objects still to fetch before it can be sent
        self.cancelled = False


class _Link(Handler):
    def __init__(self, agent: WorkerAgent, what: str) -> None:
        self.agent = agent
        self.what = what

    def connection_open(self, conn: Connection) -> None:
        if self.what == "scheduler":
            self.agent.scheduler_open(conn)

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
                self.agent.storage_lost(reason)
        else:
            self.agent.processor_lost(conn, reason)


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
    agent = WorkerAgent(loop, config, lifeline_fd)

    def stop_from_signal(_signum: int) -> None:
        loop.call_soon_threadsafe(agent.stop)

    proc_util.on_stop_signals(stop_from_signal)
    proc_util.watch_lifeline(lifeline_fd, lambda: (proc_util.exit_soon_after(5.0),
                                                   loop.call_soon_threadsafe(agent.stop)))
    try:
        loop.run()
    finally:
        agent.shutdown()
        loop.close()
    return agent.exit_code


__all__ = ["WorkerAgent", "run_worker"]
