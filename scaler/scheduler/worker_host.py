"""One worker's task pipeline, run by the scheduler: tasks go straight to the processor.

A worker is two processes: the agent, which joined the scheduler and supervises, and the
processor, which runs tasks and holds a connection of its own to the scheduler. The
scheduler keeps the worker's :class:`~.pipeline.TaskPipeline` here and sends each task to
the processor and reads its result there, so a task's round trip wakes three processes
(client, scheduler, processor) and not four. The agent is asked only for what is not per
task: fetching an object into the processor, dropping objects there, replacing the
processor (a running task cancelled or timed out), and the processor's exit status.

What the scheduler's state sends to the worker (``WorkerTask``, ``WorkerTaskCancel``,
``ObjectDeleteOwner``) comes in through :meth:`WorkerHost.deliver`. The pipeline answers some
of those at once (a cancel of a queued task): such answers are held and handed to the state
after it returns (``call_soon``), never into it while it is busy.
"""

import time
from typing import Any, Callable, List, Optional

from ..protocol.codec import Message
from ..protocol.messages import (ObjectDeleteOwner, ProcessorDropObjects, ProcessorWaiting, TaskOutput, TaskResult,
                                 WorkerDropObjects, WorkerFetchObject, WorkerRestartProcessor, WorkerTask,
                                 WorkerTaskCancel)
from .pipeline import PipelineEffects, TaskPipeline

# How long a processor whose connection closed waits for its agent to say how it exited (the
# detail its running task fails with) before it is counted as dead without one.
EXIT_NOTE_SECONDS = 2.0


class WorkerHost(PipelineEffects):
    def __init__(self, worker_id: bytes, agent: Any, on_result: Callable[[bytes, Message], None],
                 on_output: Callable[[bytes, Message], None], call_soon: Callable[[Callable[[], Any]], None],
                 call_later: Callable[[float, Callable[[], Any]], Any], task_timeout: float,
                 processor_token: bytes, clock: Callable[[], float] = time.monotonic) -> None:
        self.worker_id = worker_id
        self._token = processor_token
        self.agent = agent  # the agent's Connection
        self.processor: Any = None  # the processor's Connection, once it has connected
        self.processor_pid = 0
        self.task_timeout = task_timeout
        self.pipeline = TaskPipeline(self, clock)
        self._on_result = on_result
        self._on_output = on_output
        self._call_soon = call_soon
        self._call_later = call_later
        self._inside = 0  # > 0 while the scheduler's state calls in: answers wait (see the module doc)
        self._held: List[Message] = []
        self._lost: Any = None  # (connection, pid, reason) of a processor gone without its exit note yet
        self.closed = False

    # --- from the scheduler's state ---
    def deliver(self, msg: Message) -> None:
        kind = type(msg)
        self._inside += 1
        try:
            if kind is WorkerTask:
                self.pipeline.add(msg, msg.priority)
            elif kind is WorkerTaskCancel:
                self.pipeline.cancel(msg.task_id, msg.force)
            elif kind is ObjectDeleteOwner:
                self.pipeline.drop_owner(msg.owner_id)
            else:
                self.agent.send(msg)
        finally:
            self._inside -= 1

    # --- from the processor's connection ---
    def admits(self, token: bytes) -> bool:
        """A processor connecting for this worker showed the token its agent announced."""
        import hmac
        return bool(self._token) and hmac.compare_digest(self._token, token)

    def attach(self, conn: Any, pid: int) -> None:
        """A processor of this worker connected: it gets the tasks from now on."""
        if self.processor is not None:  # its exit note and its connection's end crossed this one
            self._processor_gone(self.processor, self.processor_pid, "replaced by a new processor")
        self._settle_lost()
        self.processor = conn
        self.processor_pid = pid
        self.pipeline.processor_ready()

    def processor_message(self, conn: Any, msg: Message) -> None:
        if conn is not self.processor:
            return  # a replaced processor's: what it had was answered when it was replaced
        kind = type(msg)
        if kind is TaskResult:
            self.pipeline.processor_result(msg)
        elif kind is TaskOutput:
            self._on_output(self.worker_id, msg)
        elif kind is ProcessorWaiting:
            self.pipeline.processor_waiting(msg.task_id, msg.waiting)
        else:
            conn.close("unexpected %s from a processor" % kind.__name__)

    def processor_closed(self, conn: Any, reason: str) -> None:
        """Its connection ended: wait a little for the agent's note of how it exited."""
        if conn is not self.processor:
            return
        self.processor = None
        self._lost = (conn, self.processor_pid, reason)
        lost = self._lost
        self._call_later(EXIT_NOTE_SECONDS, lambda: self._settle_lost(lost))

    # --- from the agent ---
    def object_ready(self, object_id: bytes, found: bool) -> None:
        self.pipeline.object_arrived(object_id, found)

    def processor_exited(self, pid: int, detail: str) -> None:
        """The agent saw its processor ``pid`` exit: its running task fails with ``detail``."""
        if self._lost is not None and self._lost[1] == pid:
            self._lost = None
            self.pipeline.processor_died(detail)
        elif self.processor is not None and self.processor_pid == pid:
            conn = self.processor
            self.processor = None
            conn.close("processor exited")
            self.pipeline.processor_died(detail)

    # --- time ---
    def check_timeout(self) -> Optional[bytes]:
        if self.task_timeout <= 0:
            return None
        return self.pipeline.check_timeout(self.task_timeout)

    def close(self) -> None:
        """The worker left: its processor's connection goes too (the state re-queued its tasks)."""
        self.closed = True
        self._lost = None
        conn, self.processor = self.processor, None
        if conn is not None:
            conn.close("worker left")

    # --- the pipeline's effects ---
    def fetch_object(self, object_id: bytes) -> None:
        self.agent.send(WorkerFetchObject(object_id))

    def to_processor(self, msg: Message) -> None:
        if type(msg) is ProcessorDropObjects:
            self.agent.send(WorkerDropObjects(msg.object_ids))  # behind the objects, which the agent sent
        elif self.processor is not None:
            self.processor.send(msg)

    def send_result(self, result: Message) -> None:
        if self.closed:
            return
        if self._inside:
            if not self._held:
                self._call_soon(self._release_held)
            self._held.append(result)
            return
        self._on_result(self.worker_id, result)

    def restart_processor(self, why: str) -> None:
        conn, self.processor = self.processor, None
        if conn is not None:
            conn.close("processor replaced: %s" % why)
        self._lost = None
        self.agent.send(WorkerRestartProcessor(why))

    # --- internals ---
    def _release_held(self) -> None:
        held, self._held = self._held, []
        if not self.closed:
            for result in held:
                self._on_result(self.worker_id, result)

    def _processor_gone(self, conn: Any, pid: int, reason: str) -> None:
        self.processor = None
        conn.close(reason)
        self.pipeline.processor_died(reason)

    def _settle_lost(self, lost: Any = None) -> None:
        """A processor gone without its exit note (or before ``attach`` of its successor)."""
        if self._lost is None or (lost is not None and lost is not self._lost):
            return
        _, _, reason = self._lost
        self._lost = None
        if not self.closed:
            self.pipeline.processor_died("its connection closed (%s)" % reason)


__all__ = ["WorkerHost"]
