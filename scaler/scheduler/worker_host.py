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
from ..utility.cpu_policy import LINED_UP
from .pipeline import PipelineEffects, TaskPipeline

# How long a processor whose connection closed waits for its agent to say how it exited (the
# detail its running task fails with) before it is counted as dead without one.
EXIT_NOTE_SECONDS = 2.0


class WorkerHost(PipelineEffects):
    def __init__(self, worker_id: bytes, agent: Any, on_result: Callable[[bytes, Message], None],
                 on_output: Callable[[bytes, Message], None], call_soon: Callable[[Callable[[], Any]], None],
                 call_later: Callable[[float, Callable[[], Any]], Any], task_timeout: float,
                 processor_token: bytes, clock: Callable[[], float] = time.monotonic,
                 on_lined_up: Callable[[bool], None] = lambda lined_up: None) -> None:
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
        # Answers the pipeline gives are held while it runs and handed on after it returned
        # (see the module doc): at once when the event came from a connection or a timer,
        # after the state's call when the state called in (deliver).
        self._inside = 0
        self._held: List[Message] = []
        self._release_scheduled = False
        # Whether the pipeline holds LINED_UP tasks or more (its processor has its next task at
        # hand), told to on_lined_up as it changes (the scheduler's CPU policy follows it).
        self.lined_up = False
        self._on_lined_up = on_lined_up
        self._note: Any = None  # (pid, detail): the agent's exit note, come before the connection's end
        self._lost: Any = None  # (pid, reason): the connection ended, the exit note has not come
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
            if not self._inside:
                if self._held and not self._release_scheduled:
                    self._release_scheduled = True
                    self._call_soon(self._release_held)
                self._follow_lined_up()

    # --- from the processor's connection ---
    def admits(self, token: bytes) -> bool:
        """A processor connecting for this worker showed the token its agent announced."""
        import hmac
        return bool(self._token) and hmac.compare_digest(self._token, token)

    def attach(self, conn: Any, pid: int) -> None:
        """A processor of this worker connected: it gets the tasks from now on."""
        self._inside += 1
        try:
            if self.processor is not None:  # the old one's end and exit note crossed this connection
                old, self.processor = self.processor, None
                old.close("replaced by a new processor")
                self.pipeline.processor_died("replaced by a new processor")
            if self._lost is not None:
                self._lost = None
                self.pipeline.processor_died("its connection closed")
            self._note = None
            self.processor = conn
            self.processor_pid = pid
            self.pipeline.processor_ready()
        finally:
            self._leave()

    def processor_message(self, conn: Any, msg: Message) -> None:
        if conn is not self.processor:
            return  # a replaced processor's: what it had was answered when it was replaced
        kind = type(msg)
        if kind is TaskResult:
            self._through(self.pipeline.processor_result, msg)
        elif kind is TaskOutput:
            self._on_output(self.worker_id, msg)
        elif kind is ProcessorWaiting:
            self._through(self.pipeline.processor_waiting, msg.task_id, msg.waiting)
        else:
            conn.close("unexpected %s from a processor" % kind.__name__)

    def processor_batch(self, conn: Any, msgs: List[Message]) -> None:
        """Messages the processor sent back to back, read at once (see Handler.batch_types): a
        run of results goes to the pipeline whole."""
        if conn is not self.processor:
            return
        if type(msgs[0]) is TaskResult:
            self._through(self.pipeline.processor_results, msgs)
            return
        for msg in msgs:
            self.processor_message(conn, msg)

    def processor_closed(self, conn: Any, reason: str) -> None:
        """Its connection ended, after everything it sent was read: it died with the agent's
        exit note as the detail, or, without one yet, wait a little for the note."""
        if conn is not self.processor:
            return
        self.processor = None
        note, self._note = self._note, None
        if note is not None and note[0] == self.processor_pid:
            self._died(note[1])
            return
        self._lost = lost = (self.processor_pid, reason)
        self._call_later(EXIT_NOTE_SECONDS, lambda: self._no_note(lost))

    # --- from the agent ---
    def object_ready(self, object_id: bytes, found: bool) -> None:
        self._through(self.pipeline.object_arrived, object_id, found)

    def object_stored(self, object_id: bytes, error: str) -> None:
        self._through(self.pipeline.object_stored, object_id, error)

    def processor_exited(self, pid: int, detail: str) -> None:
        """The agent saw its processor ``pid`` exit: its running task fails with ``detail``,
        once its connection has ended (what it sent before dying is read first)."""
        if self._lost is not None and self._lost[0] == pid:
            self._lost = None
            self._died(detail)
        elif self.processor is not None and self.processor_pid == pid:
            self._note = (pid, detail)
            conn = self.processor
            self._call_later(EXIT_NOTE_SECONDS, lambda: self._end_unended(conn))

    # --- time ---
    def check_timeout(self) -> Optional[bytes]:
        if self.task_timeout <= 0:
            return None
        return self._through(self.pipeline.check_timeout, self.task_timeout)

    def close(self) -> None:
        """The worker left: its processor's connection goes too (the state re-queued its tasks)."""
        self.closed = True
        self._lost = self._note = None
        self._held = []
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
            self._held.append(result)
            return
        self._on_result(self.worker_id, result)

    def restart_processor(self, why: str) -> None:
        conn, self.processor = self.processor, None
        if conn is not None:
            conn.close("processor replaced: %s" % why)
        self._lost = self._note = None
        self.agent.send(WorkerRestartProcessor(why))

    # --- internals ---
    def _through(self, event: Callable[..., Any], *args: Any) -> Any:
        """Feed the pipeline an event from a connection or a timer (not from the state)."""
        self._inside += 1
        try:
            return event(*args)
        finally:
            self._leave()

    def _leave(self) -> None:
        """After an event from a connection or a timer: hand on what the pipeline answered."""
        self._inside -= 1
        if not self._inside:
            if self._held:
                self._release_held()
            self._follow_lined_up()

    def _follow_lined_up(self) -> None:
        lined_up = len(self.pipeline) >= LINED_UP
        if lined_up is not self.lined_up and not self.closed:
            self.lined_up = lined_up
            self._on_lined_up(lined_up)

    def _release_held(self) -> None:
        self._release_scheduled = False
        while self._held and not self.closed:
            held, self._held = self._held, []
            for result in held:
                self._on_result(self.worker_id, result)

    def _died(self, detail: str) -> None:
        if not self.closed:
            self._through(self.pipeline.processor_died, detail)

    def _no_note(self, lost: Any) -> None:
        """The connection ended and the agent did not say the processor exited: it may be
        alive without its connection (a network fault), running a task that is retried
        elsewhere now. The agent replaces it."""
        if self._lost is not lost or self.closed:
            return
        self._lost = None
        self._died("its connection to the scheduler closed (%s)" % lost[1])
        self.agent.send(WorkerRestartProcessor("its connection to the scheduler closed"))

    def _end_unended(self, conn: Any) -> None:
        """The agent said the processor exited, but its connection has not ended since."""
        note = self._note
        if note is None or self.processor is not conn or self.closed:
            return
        self._note = None
        self.processor = None
        conn.close("its processor exited")
        self._died(note[1])


__all__ = ["WorkerHost"]
