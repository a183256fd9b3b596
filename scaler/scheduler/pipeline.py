"""A worker's task pipeline: which task goes to its processor, when. No sockets, no threads.

The scheduler keeps one per worker (:mod:`.worker_host`) and sends the tasks to
the worker's processor itself, over the processor's own connection: the worker's agent is
not on a task's way. The host feeds it events (a task arrived, an object reached the
processor, a result came back, the processor died...) and it answers through a small
:class:`PipelineEffects` interface (fetch an object, send to the processor, send a
result...), with time read from an injected clock. So its rules are unit-tested by driving
it directly (``tests/test_worker_pipeline.py``), and the host is only wiring.

Where a task is, in order:

* **queued** — held here, not sent yet: taken highest priority first, arrival order
  within one priority; the scheduler can still take it back (a non-forced cancel);
* **preparing** — taken from the queue, in order, while objects they need (function,
  serializer, ``send_object`` arguments, large arguments, graph inputs) are fetched from
  object storage and passed to the processor by the worker's agent: the fetches of
  several tasks overlap, but each task is sent only once every task taken before it has
  been, so a task never overtakes an earlier one in the processor;
* **in flight** — sent to the processor, which runs them in order: the first one is
  the running one, which keeps cancellation and crash attribution exact.

How many go in flight at once is the *pipelining depth*: 64 while tasks take under 0.2 ms
(16 for a task whose objects must be fetched first), 16 under 2 ms (fewer wake-ups, and a
processor that keeps running while the scheduler waits for a CPU), 4 under 20 ms, else 1
(a moving average of the processor's time per task decides, starting from "slow"), so long
tasks wait here where the scheduler can move them to idle workers. A task sent ahead and
not started can still be moved: a balancing cancel asks the processor for it back, and
the processor's answer (skipped, or its result) is what the state learns. And nothing
joins behind a running task that has taken longer than ``HEAD_STALL_SECONDS`` (the
*head-stall rule*): a task waiting for sub-tasks it submitted must not hold them hostage.

**Nested tasks.** A task that submits tasks and blocks on them tells the pipeline so
(:meth:`TaskPipeline.processor_waiting`); while it waits, the processor runs, on top of it,
tasks that strictly outrank it (a child has its parent's priority + 1), and the pipeline
sends such tasks past the depth and head-stall limits. So a waiting parent never holds the
only slot its children could run in (see "Nested tasks" in ``docs/architecture.rst``).
"""


import collections
import bisect
import time
from typing import AbstractSet, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Set

from ..protocol.call import call_objects, read_call
from ..protocol.codec import Message, ProtocolError
from ..protocol.messages import (FLAG_NEEDS_OBJECTS, STATUS_CANCELLED, STATUS_MISSING_OBJECT, STATUS_OK_OBJECT,
                                 STATUS_PROCESSOR_DIED, STATUS_TIMED_OUT, ProcessorCancel, ProcessorDropObjects,
                                 ProcessorTask, TaskResult)

PIPELINE_DEPTH = 64  # tasks sent ahead to the processor (which runs them in order) while tasks are very short
OBJECT_TASKS_AHEAD = 16  # at most this many ahead when the next one needs objects fetched (its arguments)
HEAD_STALL_SECONDS = 0.001  # the running task has taken this long: stop queueing behind it
STORED_EARLY_LIMIT = 4096  # put outcomes remembered for results not seen yet (see object_stored)


def pipeline_depth(task_seconds: float) -> int:
    """Short tasks: send many ahead (fewer wake-ups). Long ones: one at a time, so queued
    tasks stay here where the scheduler can move them to idle workers.

    The deepest tier holds less work than the next (64 x 0.2 ms, 16 x 2 ms) and is for
    tasks shorter than a scheduler's turn: on a busy machine the scheduler waits for a CPU
    while the processors run (it does not preempt them, see ``utility/cpu_policy.py``),
    and 16 no-op tasks are done before it gets one; 64 keep the processors busy through
    the wait (a no-op map on 2 CPUs: ~40k -> ~52k tasks/s)."""
    if task_seconds < 0.0002:
        return PIPELINE_DEPTH
    if task_seconds < 0.002:
        return 16
    if task_seconds < 0.02:
        return 4
    return 1


class PipelineEffects:
    """What the pipeline asks of the agent. None of these may call back into the pipeline."""

    def fetch_object(self, object_id: bytes) -> None:
        """Have an object fetched from object storage and passed to the processor; answer
        with :meth:`TaskPipeline.object_arrived`."""
        raise NotImplementedError

    def to_processor(self, msg: Message) -> None:
        """Send a message to the processor (dropped if there is none); a ``ProcessorDropObjects``
        must reach it behind the objects it names."""
        raise NotImplementedError

    def send_result(self, result: Message) -> None:
        """Send a ``TaskResult`` to the scheduler."""
        raise NotImplementedError

    def restart_processor(self, why: str) -> None:
        """Replace the processor (the pipeline already took back what it held); answer with
        :meth:`TaskPipeline.processor_ready` once the new one is ready."""
        raise NotImplementedError


_NONE: Sequence[bytes] = ()
_NOTHING: AbstractSet[bytes] = frozenset()


class _Item:
    """One task held by the pipeline."""

    __slots__ = ("task", "priority", "temp", "waiting", "cancelled", "sent_at", "started_at", "blocked", "recalled")

    def __init__(self, task: Message, priority: int) -> None:
        self.task = task
        self.priority = priority
        self.temp: Sequence[bytes] = _NONE  # one-use objects of this task (replaced, never changed in place)
        self.waiting: AbstractSet[bytes] = _NOTHING  # objects still to fetch before it can be sent (replaced by a set)
        self.cancelled = False  # sent, then cancelled: the processor skips it, its result is dropped
        self.sent_at = 0.0
        self.started_at = 0.0  # when it became the processor's running task (first in flight)
        self.blocked = False  # started, and now waiting for tasks it submitted
        self.recalled = False  # sent, then asked back for balancing: the processor's answer decides


class _PriorityQueue:
    """Highest priority first, arrival order within one; removal by task id.

    One ordered dict per priority level, so the common case (one level) costs a dict
    insert and a ``popitem``, and a cancel is a dict removal.
    """

    def __init__(self) -> None:
        self._levels: Dict[int, "collections.OrderedDict[bytes, _Item]"] = {}
        self._order: List[int] = []  # the levels present, as negated priorities: ascending = best first
        self._count = 0

    def push(self, item: _Item, front: bool = False) -> None:
        key = -item.priority
        level = self._levels.get(key)
        if level is None:
            level = self._levels[key] = collections.OrderedDict()
            bisect.insort(self._order, key)
        task_id = item.task.task_id
        if task_id not in level:
            self._count += 1
        level[task_id] = item
        if front:
            level.move_to_end(task_id, last=False)

    def best_priority(self) -> Optional[int]:
        return -self._order[0] if self._order else None

    def pop(self) -> _Item:
        key = self._order[0]
        level = self._levels[key]
        _, item = level.popitem(last=False)
        self._count -= 1
        if not level:
            del self._levels[key]
            self._order.pop(0)
        return item

    def remove(self, task_id: bytes) -> Optional[_Item]:
        for key in self._order:
            level = self._levels[key]
            item = level.pop(task_id, None)
            if item is not None:
                self._count -= 1
                if not level:
                    del self._levels[key]
                    self._order.remove(key)
                return item
        return None

    def clear(self) -> None:
        self._levels.clear()
        self._order.clear()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[_Item]:
        """In the order :meth:`pop` would return them."""
        for key in self._order:
            yield from self._levels[key].values()


class TaskPipeline:
    """The worker's task state between the scheduler and the processor (see the module doc)."""

    def __init__(self, effects: PipelineEffects, clock: Callable[[], float] = time.monotonic) -> None:
        self._effects = effects
        self._clock = clock
        self._queue = _PriorityQueue()
        self._preparing: Deque[_Item] = collections.deque()  # taken in order, sent in order
        self._fetching: Set[bytes] = set()  # objects asked of the agent, not arrived yet
        # Fetches asked for a processor that is gone: their arrivals are not for the next one.
        self._stale: Dict[bytes, int] = {}
        self._inflight: Deque[_Item] = collections.deque()
        self._ready = False  # the processor is up and may be sent tasks
        self._holds: Dict[bytes, bytes] = {}  # objects the processor holds -> owning client
        self._pending_results: Dict[bytes, Message] = {}  # object id -> TaskResult (status 1) waiting for its put
        # Put outcomes that came before their result (the agent's note and the processor's result
        # travel on different connections): object id -> error.
        self._stored_early: "collections.OrderedDict[bytes, str]" = collections.OrderedDict()
        self._blocked: List[_Item] = []  # tasks waiting for their sub-tasks, outermost first
        self._temp_users: Dict[bytes, int] = {}  # temporary object -> tasks sent that read it
        # Moving average of the processor's time per task; start by assuming tasks are slow.
        self.task_seconds = 0.1
        self.depth = pipeline_depth(self.task_seconds)
        self._last_result_at = 0.0

    # --- what it holds ---
    def __len__(self) -> int:
        """Tasks held: queued, preparing and in flight (for heartbeats)."""
        return len(self._queue) + len(self._preparing) + len(self._inflight)

    @property
    def processor_is_ready(self) -> bool:
        return self._ready

    def queued(self) -> List[bytes]:
        """Ids of the queued tasks, in the order they will be taken."""
        return [item.task.task_id for item in self._queue]

    def preparing(self) -> List[bytes]:
        """Ids of the tasks taken but not sent yet (waiting for objects, or behind one that is)."""
        return [item.task.task_id for item in self._preparing]

    def inflight(self) -> List[bytes]:
        """Ids of the tasks with the processor, the running one first (cancelled ones too)."""
        return [item.task.task_id for item in self._inflight]

    def blocked_count(self) -> int:
        """Tasks with the processor that wait for tasks they submitted (for monitors)."""
        return len(self._blocked)

    def storing(self) -> List[bytes]:
        """Ids of the tasks whose result is being stored, to be announced once it is."""
        return [result.task_id for result in self._pending_results.values()]

    def processor_holds(self) -> Dict[bytes, bytes]:
        """Object id -> owning client, for the objects the processor has been sent."""
        return dict(self._holds)

    # --- events from the scheduler ---
    def add(self, task: Message, priority: int = 0) -> None:
        """A ``WorkerTask`` arrived; higher ``priority`` is taken first."""
        self._queue.push(_Item(task, priority))
        if len(self._inflight) + len(self._preparing) < self.depth or self._blocked:
            self._pump()  # (_pump applies the head-stall rule, and lets children past a waiting parent)

    def cancel(self, task_id: bytes, force: bool) -> None:
        """Take back a task not sent yet; with ``force`` also one with the processor, and stop
        it if it runs (by replacing the processor). Answers ``STATUS_CANCELLED`` when taken."""
        if self._queue.remove(task_id) is not None:
            self._cancelled(task_id)
            return
        for item in self._preparing:
            if item.task.task_id == task_id:
                self._preparing.remove(item)
                self._release_temp(item.temp)
                self._cancelled(task_id)
                self._send_prepared()
                self._pump()
                return
        if not force:
            # Balancing: a task sent ahead and not started is asked back. The processor
            # answers STATUS_CANCELLED if it skipped it (passed on: the state gives it to
            # another worker) or its result if it had started it; never both, never here.
            for position, item in enumerate(self._inflight):
                if item.task.task_id == task_id:
                    if position > 0 and not item.cancelled and not item.recalled:
                        item.recalled = True
                        self._effects.to_processor(ProcessorCancel(task_id))
                    return
            return
        for position, item in enumerate(self._inflight):
            if item.task.task_id != task_id or item.cancelled:
                continue
            self._cancelled(task_id)
            if position == 0:  # running now: the only way to stop it is to replace the processor
                self._inflight.popleft()
                self._replace_processor("task cancelled while running")
            else:  # not started yet: the processor will skip it
                item.cancelled = True
                self._effects.to_processor(ProcessorCancel(task_id))
            return

    def drop_owner(self, owner_id: bytes) -> None:
        """A client left: the processor forgets the objects it owned."""
        ids = [object_id for object_id, owner in self._holds.items() if owner == owner_id]
        for object_id in ids:
            del self._holds[object_id]
        if ids:
            self._effects.to_processor(ProcessorDropObjects(ids))

    # --- events from the agent ---
    def object_arrived(self, object_id: bytes, found: bool) -> None:
        """A fetched object is on its way to the processor (or not in storage): send the tasks
        that were waiting for it, in order, once all of their objects are."""
        stale = self._stale.get(object_id)
        if stale:  # fetched for the processor before this one: not here
            if stale > 1:
                self._stale[object_id] = stale - 1
            else:
                del self._stale[object_id]
            return
        if object_id not in self._fetching:
            return
        self._fetching.discard(object_id)
        preparing = self._preparing
        if not found:
            for item in [item for item in preparing if object_id in item.waiting]:
                preparing.remove(item)
                self._release_temp(item.temp)
                self._effects.send_result(TaskResult(item.task.task_id, STATUS_MISSING_OBJECT, b"",
                                                     "object %s is not in object storage (deleted, or its owner "
                                                     "left)" % object_id.hex()))
        else:
            for item in preparing:
                if object_id in item.waiting:
                    item.waiting = item.waiting - {object_id}
                    self._holds[object_id] = item.task.client_id
        self._send_prepared()
        self._pump()

    def object_stored(self, object_id: bytes, error: str) -> None:
        """The agent put a result the processor handed it into object storage (``error``
        empty), or could not: the result that names it can be announced."""
        result = self._pending_results.pop(object_id, None)
        if result is None:  # its result has not come yet (or never will: its processor died)
            early = self._stored_early
            early[object_id] = error
            if len(early) > STORED_EARLY_LIMIT:
                early.popitem(last=False)
            return
        self._effects.send_result(_stored(result, error))

    # --- events from the processor ---
    def processor_ready(self) -> None:
        self._ready = True
        self._pump()

    def processor_result(self, result: Message) -> None:
        """A ``TaskResult`` from the processor: answer it, learn the task's duration, refill."""
        self.processor_results((result,))

    def processor_results(self, results: Sequence[Message]) -> None:
        """``TaskResult`` s from the processor, in the order it sent them (a run of short tasks'
        comes as one batch): answer each, learn the tasks' duration, refill once."""
        inflight = self._inflight
        now = self._clock()
        taken = timed = 0
        for result in results:
            if not inflight:
                break
            if inflight[0].task.task_id == result.task_id:
                item = inflight.popleft()
            else:  # should not happen (in-order), but never lose track of a task
                matches = [i for i in inflight if i.task.task_id == result.task_id]
                if not matches:
                    continue
                item = matches[0]
                inflight.remove(item)
            taken += 1
            if item.blocked:
                item.blocked = False
                self._blocked.remove(item)
            if item.temp:
                self._release_temp(item.temp)
            if not item.cancelled:
                self._answer(result)
            if item.cancelled or (item.recalled and result.status == STATUS_CANCELLED):
                continue  # skipped, answered at once: not a task's duration
            timed += 1
            if timed == 1:
                since = max(item.sent_at, self._last_result_at)
        if not taken:
            return
        if inflight:
            inflight[0].started_at = max(inflight[0].sent_at, now)  # the next one starts now
        if timed:
            sample = (now - since) / timed  # (a batch came at once: its tasks shared the time since)
            self.task_seconds += (1.0 - 0.75 ** timed) * (sample - self.task_seconds)
            self.depth = pipeline_depth(self.task_seconds)
        self._last_result_at = now
        self._pump()

    def processor_waiting(self, task_id: bytes, waiting: bool) -> None:
        """The running task ``task_id`` blocks on sub-tasks (or goes on): while it waits, tasks
        that outrank it are sent to the processor past the pipelining limits."""
        item = next((i for i in self._inflight if i.task.task_id == task_id), None)
        if item is None:
            return
        if waiting and not item.blocked:
            self._blocked.append(item)
        elif not waiting and item.blocked:
            self._blocked.remove(item)
        item.blocked = waiting
        self._pump()

    def check_timeout(self, limit: float) -> Optional[bytes]:
        """Stop the running task if it has run longer than ``limit`` seconds (0: no limit):
        it fails with ``STATUS_TIMED_OUT`` and the processor is replaced, so the next task
        runs. Returns the id of the task stopped, if any."""
        if limit <= 0 or not self._inflight:
            return None
        head = self._inflight[0]
        if head.cancelled or self._clock() - head.started_at <= limit:
            return None
        self._inflight.popleft()
        task_id = head.task.task_id
        self._effects.send_result(TaskResult(task_id, STATUS_TIMED_OUT, b"",
                                             "task %s ran longer than the task timeout (%gs) and was stopped"
                                             % (task_id.hex(), limit)))
        self._replace_processor("task %s timed out after %gs" % (task_id.hex(), limit))
        return task_id

    def processor_died(self, detail: str) -> None:
        """The processor is gone (the agent starts another): its running task fails, the
        others go back to the front of the queue."""
        if self._inflight:
            running = self._inflight.popleft()
            if not running.cancelled:
                self._effects.send_result(TaskResult(running.task.task_id, STATUS_PROCESSOR_DIED, b"",
                                                     "processor died: %s" % detail))
        self._processor_gone("processor died: %s" % detail)

    # --- internals ---
    def _pump(self) -> None:
        """Keep the processor's pipeline full: take queued tasks in order, fetch what they
        need, and send them in that order."""
        queue = self._queue
        if not queue or not self._ready:
            return
        now = self._clock()
        # The depth allowed now: the same for the whole loop, which only appends behind the
        # head (and a head it sends itself has just started).
        depth = self._depth_now(now)
        inflight = self._inflight
        preparing = self._preparing
        holds = self._holds
        while queue and self._ready and (len(inflight) + len(preparing) < depth or self._outranks_the_blocked()):
            item = queue.pop()
            task = item.task
            if (task.flags & FLAG_NEEDS_OBJECTS and len(inflight) + len(preparing) >= OBJECT_TASKS_AHEAD
                    and not (self._blocked and item.priority > self._blocked[-1].priority)):
                queue.push(item, front=True)  # its objects would be fetched long before it runs
                break
            if not preparing and not task.flags & FLAG_NEEDS_OBJECTS and task.func_id in holds:
                self._send(item, now)  # the common case: nothing to read or fetch, nothing ahead
                continue
            needed = [task.func_id]
            if task.flags & FLAG_NEEDS_OBJECTS:
                try:
                    call = read_call(task.call)
                except ProtocolError as exc:
                    self._effects.send_result(TaskResult(task.task_id, STATUS_MISSING_OBJECT, b"",
                                                         "malformed task: %s" % exc))
                    continue
                objects, item.temp = call_objects(call)
                needed.extend(objects)
                users = self._temp_users  # counted from now: a held input is not dropped under it
                for object_id in item.temp:
                    users[object_id] = users.get(object_id, 0) + 1
            missing = [object_id for object_id in dict.fromkeys(needed) if object_id not in holds]
            if not missing and not preparing:
                self._send(item, now)
                continue
            item.waiting = set(missing)
            preparing.append(item)
            fetching = self._fetching
            for object_id in missing:
                if object_id not in fetching:
                    fetching.add(object_id)
                    self._effects.fetch_object(object_id)

    def _send_prepared(self) -> None:
        """Send the prepared tasks at the front, in order, up to the first still waiting."""
        preparing = self._preparing
        if preparing and not preparing[0].waiting and self._ready:
            now = self._clock()
            while preparing and not preparing[0].waiting:
                self._send(preparing.popleft(), now)

    def _outranks_the_blocked(self) -> bool:
        """The best queued task outranks the innermost blocked one: the processor will run it
        on top of that one, now (a child of a waiting parent)."""
        if not self._blocked:
            return False
        best = self._queue.best_priority()
        return best is not None and best > self._blocked[-1].priority

    def _depth_now(self, now: float) -> int:
        """No new task joins the pipe behind one that is taking long: it stays here, where the
        scheduler can still move it to an idle worker (a task waiting for its own sub-tasks
        would otherwise hold them hostage)."""
        if self._blocked or (self._inflight and (now - max(self._inflight[0].sent_at, self._last_result_at)
                                                 > HEAD_STALL_SECONDS)):
            return 1
        return self.depth

    def _send(self, item: _Item, now: float) -> None:
        task = item.task
        item.sent_at = item.started_at = now
        self._inflight.append(item)
        self._effects.to_processor(ProcessorTask(task.task_id, task.flags, task.func_id, task.call, item.priority,
                                                 task.client_id))

    def _release_temp(self, object_ids: List[bytes]) -> None:
        """A task that read these temporary objects has ended: the processor drops each one
        no other task sent to it reads (graph nodes may share an input)."""
        users = self._temp_users
        done = []
        for object_id in object_ids:
            count = users.get(object_id, 0) - 1
            if count > 0:
                users[object_id] = count
                continue
            users.pop(object_id, None)
            if self._holds.pop(object_id, None) is not None:
                done.append(object_id)
        if done:
            self._effects.to_processor(ProcessorDropObjects(done))

    def _answer(self, result: Message) -> None:
        """A result stored in object storage (status 1: the processor's agent stores results
        over 64 KiB, and graph nodes' kept results) is announced once the put is done."""
        if result.status == STATUS_OK_OBJECT:
            object_id = bytes(result.payload)
            error = self._stored_early.pop(object_id, None)
            if error is None:
                self._pending_results[object_id] = result
                return
            result = _stored(result, error)
        self._effects.send_result(result)

    def _cancelled(self, task_id: bytes) -> None:
        self._effects.send_result(TaskResult(task_id, STATUS_CANCELLED, b"", "cancelled"))

    def _replace_processor(self, why: str) -> None:
        self._processor_gone("processor replaced: %s" % why)
        self._effects.restart_processor(why)

    def _processor_gone(self, why: str) -> None:
        """The processor and all it held are gone: tasks it had started and that were blocked
        on sub-tasks fail (they ran, and may have had effects); what it had not started goes
        back to the front of the queue, ahead of later tasks of its priority, in its order."""
        self._ready = False
        self._holds = {}
        self._temp_users = {}
        blocked, self._blocked = self._blocked, []
        for item in blocked:
            if item in self._inflight:
                self._inflight.remove(item)
                if not item.cancelled:
                    self._effects.send_result(TaskResult(item.task.task_id, STATUS_PROCESSOR_DIED, b"", why))
        waiting = []
        for item in self._inflight:
            if item.recalled and not item.cancelled:
                self._cancelled(item.task.task_id)  # asked back and not started: given back as asked
            elif not item.cancelled:
                waiting.append(item)
        waiting.extend(self._preparing)
        self._preparing.clear()
        stale = self._stale
        for object_id in self._fetching:
            stale[object_id] = stale.get(object_id, 0) + 1
        self._fetching = set()
        self._inflight.clear()
        for item in reversed(waiting):
            item.blocked = False
            item.waiting = _NOTHING
            item.temp = _NONE
            self._queue.push(item, front=True)


def _stored(result: Message, error: str) -> Message:
    if not error:
        return result
    return TaskResult(result.task_id, STATUS_MISSING_OBJECT, b"", "could not store the result: %s" % error)


__all__ = ["HEAD_STALL_SECONDS", "PIPELINE_DEPTH", "PipelineEffects", "TaskPipeline",
           "pipeline_depth"]
