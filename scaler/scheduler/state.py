"""The scheduler's state machine: clients, workers, tasks. No sockets in here.

Handlers are called with decoded messages and the time; they change the tables and emit
messages through the ``send(peer_id, msg)`` callable they were given, and object deletions
through ``free_owner(owner_id)`` / ``free_objects(ids)``. Tests drive this class directly,
and it is the only writer of its tables: the server and the manager table call methods.

Each task is in exactly one place, named by its :class:`TaskState` (see ``task.py``):
waiting for its graph inputs (``WAITING``, reachable only through its inputs' ``graph``
records), the ready queue (``QUEUED``), one worker's ``tasks`` (``ASSIGNED``, ``MOVING``,
``CANCELLING``), or gone (``DONE``). Every ending goes through :meth:`_end`, which
tells the client and, for graph nodes, releases dependents or fails them. A worker that leaves puts its tasks back at the
front of the queue; the oldest of them, the one its processor was running, is charged a
retry. Payloads (``call``) are bytes that are stored and forwarded, never looked into.
"""

import heapq
import logging
import time
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Set

from ..protocol.codec import Message
from ..protocol.messages import (FLAG_KEEP_RESULT, STATUS_BUSY, STATUS_CANCELLED, STATUS_MISSING_OBJECT, STATUS_OK,
                                 STATUS_OK_OBJECT, STATUS_PROCESSOR_DIED, STATUS_REJECTED, STATUS_WORKER_DIED,
                                 ObjectDeleteOwner, SchedulerShutdown, TaskResult, WorkerTask, WorkerTaskCancel)
from ..config.capabilities import parse_capabilities
from .graph import GraphNode, validate
from .ready_queue import ReadyQueue
from .task import ON_WORKER, Task, TaskState

logger = logging.getLogger(__name__)

Send = Callable[[bytes, Message], None]
_S = TaskState
_NO_NEEDS: FrozenSet[str] = frozenset()


def capability_names(text: str) -> FrozenSet[str]:
    """The names in ``"linux,gpu=2"`` (routing compares names only, as upstream does).

    Raises CapabilitiesError (a ValueError) for text that is not valid.
    """
    return frozenset(parse_capabilities(text))


class WorkerInfo:
    __slots__ = ("worker_id", "name", "queue_size", "capabilities", "names", "pid", "manager_id", "tasks",
                 "last_seen", "queued_reported", "rss", "cpu", "draining", "group_id", "idle_since", "host",
                 "connected_at", "done", "processor_pid", "processor_cpu", "processor_rss", "running", "suspended")

    def __init__(self, worker_id: bytes, name: str, queue_size: int, capabilities: str, pid: int,
                 manager_id: str, now: float) -> None:
        self.worker_id = worker_id
        self.name = name
        self.queue_size = max(1, queue_size)
        self.capabilities = capabilities
        self.names = capability_names(capabilities)
        self.pid = pid
        self.manager_id = manager_id
        self.tasks: Dict[bytes, None] = {}  # insertion order = the order the agent runs them
        self.last_seen = now
        self.queued_reported = 0  # what its last heartbeat said it holds
        self.rss = 0
        self.cpu = 0.0
        self.draining = False  # scaling down: no new tasks, shut down once empty
        self.group_id = ""  # set when a dynamic manager started this worker as a group
        self.idle_since: Optional[float] = now
        # For the monitor: where it connected from, results it returned, its last WorkerStatus.
        self.host = ""
        self.connected_at = now
        self.done = 0
        self.processor_pid = 0
        self.processor_cpu = 0.0
        self.processor_rss = 0
        self.running = 0
        self.suspended = 0

    @property
    def free_slots(self) -> int:
        return 0 if self.draining else self.queue_size - len(self.tasks)


class ClientInfo:
    __slots__ = ("client_id", "task_count", "last_seen", "functions")

    def __init__(self, client_id: bytes, now: float) -> None:
        self.client_id = client_id
        # Its tasks not DONE. A count, not an index of them (52 bytes a queued task): the
        # one reader of such an index, a client leaving tasks behind, scans the task table.
        self.task_count = 0
        self.last_seen = now
        # One bytes object per function id, shared by all its tasks (each decoded message
        # brings its own copy: 65 bytes a queued task). Freed with the client.
        self.functions: Dict[bytes, bytes] = {}


def short_id(peer_id: bytes) -> str:
    """A peer's id for logs: the unique part of an id like ``Client|<hex>`` (its first 12
    characters), else the first 12 hex digits of the id."""
    _, separator, unique = bytes(peer_id).partition(b"|")
    if separator and unique:
        try:
            return unique[:12].decode("ascii")
        except UnicodeDecodeError:
            pass
    return bytes(peer_id).hex()[:12]


class SchedulerState:
    def __init__(self, send: Send, free_owner: Callable[[bytes], None],
                 free_objects: Callable[[List[bytes]], None], *, max_task_retries: int = 3,
                 client_timeout_seconds: float = 60.0, worker_timeout_seconds: float = 60.0,
                 route_by_capability: bool = False, max_tasks_waiting: int = -1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.send = send
        self.clock = clock
        self.free_owner = free_owner
        self.free_objects = free_objects
        self.max_task_retries = max_task_retries
        self.client_timeout_seconds = client_timeout_seconds
        self.worker_timeout_seconds = worker_timeout_seconds
        self.max_tasks_waiting = max_tasks_waiting  # -1: no limit
        self.tasks: Dict[bytes, Task] = {}  # every task not DONE
        self.queue = ReadyQueue()  # ready tasks any worker can run
        # allocate=capability: ready tasks that need capabilities, by the names they need.
        self.route_by_capability = route_by_capability
        self.routed: Dict[FrozenSet[str], ReadyQueue] = {}
        self._missing_reported: Set[FrozenSet[str]] = set()  # capability sets we said nobody has
        self.clients: Dict[bytes, ClientInfo] = {}
        self.workers: Dict[bytes, WorkerInfo] = {}
        # Totals since start, for the monitor's rates: tasks accepted, and how they ended.
        self.submitted_total = 0
        self.finished_total = 0
        self.failed_total = 0
        self.cancelled_total = 0
        # A worker ran out of tasks since the server last looked: it balances then (balance()),
        # not at its next timer tick, so the tail of a batch is shared out at once.
        self.went_idle = False

    # --- clients ---
    def client_connected(self, client_id: bytes, now: float) -> None:
        self.clients[client_id] = ClientInfo(client_id, now)

    def client_seen(self, client_id: bytes, now: float) -> None:
        client = self.clients.get(client_id)
        if client is not None:
            client.last_seen = now

    def client_disconnected(self, client_id: bytes, reason: str) -> None:
        """Cancel what the client left behind and free its objects."""
        client = self.clients.pop(client_id, None)
        if client is None:
            return
        if client.task_count:
            logger.info("client %s left (%s): cancelling %d task(s)", short_id(client_id), reason,
                        client.task_count)
            for task in [task for task in self.tasks.values() if task.client_id == client_id]:
                worker_id = task.worker_id
                self._finish(task)
                self.cancelled_total += 1
                if worker_id is not None:
                    # Forced: nobody wants the result, and the next client should not wait for it.
                    self.send(worker_id, WorkerTaskCancel(task.task_id, True))
        self.client_cleared(client_id)
        self.free_owner(client_id)

    def client_cleared(self, client_id: bytes) -> None:
        """The client deleted its objects (``clear()``, or leaving): workers drop their copies."""
        for worker_id in self.workers:
            self.send(worker_id, ObjectDeleteOwner(client_id))

    def task_submitted(self, client_id: bytes, task_id: bytes, flags: int, func_id: bytes, call: bytes,
                       capabilities: str, priority: int = 0) -> None:
        client = self.clients.get(client_id)
        if client is None:
            return
        if task_id in self.tasks:
            self.send(client_id, TaskResult(task_id, STATUS_WORKER_DIED, b"", "duplicate task id"))
            return
        needs = _NO_NEEDS
        if self.route_by_capability and capabilities:
            try:
                needs = capability_names(capabilities)
            except ValueError as exc:
                self.send(client_id, TaskResult(task_id, STATUS_REJECTED, b"", str(exc)))
                return
        if self.max_tasks_waiting >= 0 and self._too_busy(1):
            self.send(client_id, TaskResult(task_id, STATUS_BUSY, b"", self._busy_reason()))
            return
        task = Task(task_id, client_id, flags, client.functions.setdefault(func_id, func_id), call, needs, priority)
        self.submitted_total += 1
        self.tasks[task_id] = task
        client.task_count += 1
        self._enqueue(task)

    def task_cancel_requested(self, client_id: bytes, task_id: bytes) -> None:
        task = self.tasks.get(task_id)
        if task is None or task.client_id != client_id:
            return
        if task.state is _S.QUEUED or task.state is _S.WAITING:
            self._end(task, TaskResult(task_id, STATUS_CANCELLED, b"", "cancelled"))  # a queue entry goes stale
        elif task.state in (_S.ASSIGNED, _S.MOVING):
            task.move(_S.CANCELLING)
            self.send(task.worker_id, WorkerTaskCancel(task_id, True))

    # --- workers ---
    def worker_connected(self, worker: WorkerInfo) -> None:
        self.workers[worker.worker_id] = worker

    def worker_heartbeat(self, worker_id: bytes, now: float, queued: int, rss: int, cpu: float) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.last_seen = now
            worker.queued_reported = queued
            worker.rss = rss
            worker.cpu = cpu

    def worker_status(self, worker_id: bytes, msg: Message) -> None:
        """A WorkerStatus: what the worker's processes use and do (shown by monitors only)."""
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.cpu = msg.agent_cpu
            worker.rss = msg.agent_rss
            worker.processor_pid = msg.processor_pid
            worker.processor_cpu = msg.processor_cpu
            worker.processor_rss = msg.processor_rss
            worker.running = msg.running
            worker.suspended = msg.suspended

    def set_draining(self, worker_id: bytes, draining: bool) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None and worker.draining != draining:
            worker.draining = draining
            logger.debug("%s worker %s", "draining" if draining else "undraining", worker.name)

    def set_group(self, worker_id: bytes, group_id: str) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.group_id = group_id

    def worker_named(self, name: str) -> Optional[WorkerInfo]:
        for worker in self.workers.values():
            if worker.name == name:
                return worker
        return None

    def worker_disconnected(self, worker_id: bytes, reason: str) -> None:
        """Give the worker's tasks to others; fail the running one only past the retry limit."""
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return
        task_ids = list(worker.tasks)
        if task_ids:
            logger.warning("worker %s left (%s): re-queueing %d task(s)", worker.name, reason, len(task_ids))
        requeue = []
        for position, task_id in enumerate(task_ids):
            task = self.tasks.get(task_id)
            if task is None:  # ended by an ending earlier in this loop
                continue
            if task.state is _S.CANCELLING:  # the client asked to cancel it: done, not re-run
                self._end(task, TaskResult(task_id, STATUS_CANCELLED, b"", "cancelled"))
                continue
            if position == 0:  # the agent runs its tasks in order: this one was on the processor
                task.retries += 1
                if task.retries > self.max_task_retries:
                    self._end(task, TaskResult(
                        task_id, STATUS_WORKER_DIED, b"",
                        "worker %s died while running this task (%s); gave up after %d attempts"
                        % (worker.name, reason, task.retries)))
                    continue
            requeue.append(task)
        for task in reversed(requeue):
            # An ending above may have ended it, or made it unneeded (a graph input), meanwhile.
            if task.state is _S.CANCELLING:
                self._end(task, TaskResult(task.task_id, STATUS_CANCELLED, b"", "no longer needed"))
            if task.state is _S.DONE:
                continue
            task.move(_S.QUEUED)
            task.worker_id = None
            self._enqueue(task, front=True)

    def task_output(self, worker_id: bytes, msg: Message) -> None:
        """stream_output: what a running task wrote, relayed to its client as opaque bytes.
        Dropped when the task is no longer that worker's (cancelled, moved, its client gone)."""
        task = self.tasks.get(msg.task_id)
        if task is not None and task.worker_id == worker_id:
            self.send(task.client_id, msg)

    def task_result(self, worker_id: bytes, msg: Message) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None and worker.tasks.pop(msg.task_id, 0) is None:  # (a second result for it: 0)
            if msg.status != STATUS_CANCELLED:
                worker.done += 1
            if not worker.tasks:
                worker.idle_since = self.clock()
                self.went_idle = True
        task = self.tasks.get(msg.task_id)
        if task is None or task.worker_id != worker_id:
            # The client left or cancelled meanwhile: nobody wants this result.
            if msg.status == STATUS_OK_OBJECT:
                self.free_objects([bytes(msg.payload)])
            return
        if task.state is _S.MOVING and msg.status == STATUS_CANCELLED:
            task.move(_S.QUEUED)  # given back for balancing: it goes to the front of the queue
            task.worker_id = None
            self._enqueue(task, front=True)
            return
        if msg.status == STATUS_PROCESSOR_DIED and task.state in (_S.ASSIGNED, _S.MOVING):
            # Killed from outside (the OOM killer, an operator) or by itself: like a worker
            # death, run it again elsewhere, up to the retry limit.
            task.retries += 1
            if task.retries <= self.max_task_retries:
                task.move(_S.QUEUED)
                task.worker_id = None
                self._enqueue(task, front=True)
                return
            msg = TaskResult(task.task_id, STATUS_PROCESSOR_DIED, b"", "%s; gave up after %d attempts"
                             % (msg.detail, task.retries))
        self._end(task, msg)

    def _end(self, task: Task, result: Message) -> None:
        """DONE, and the client told; a graph node's dependents released or failed with it.

        Iterative, not recursive: a failure at the root of a 10 000-node chain ends them all.
        """
        if task.graph is None:
            self._finish(task)
            self._count_end(result.status)
            self.send(task.client_id, result)
            return
        pending = [(task, result)]
        while pending:
            task, result = pending.pop()
            if task.state is _S.DONE:
                continue
            self._finish(task)
            self._count_end(result.status)
            node = task.graph
            ok = result.status == STATUS_OK_OBJECT or (result.status == STATUS_OK and not node.dependents)
            if ok and result.status == STATUS_OK_OBJECT:
                node.result_id = bytes(result.payload)
            if node.requested:
                if ok and node.consumers > 0:
                    node.held_result = result  # the client deletes what it reads: not before the dependents
                else:
                    self.send(task.client_id, result)
            elif ok and node.consumers == 0 and node.result_id is not None:
                self.free_objects([node.result_id])
            if not ok and result.status == STATUS_OK:  # a worker that did not store it as told
                result = TaskResult(task.task_id, STATUS_MISSING_OBJECT, b"", "graph node result was not stored")
            for dependent in node.dependents:
                if dependent.state is _S.DONE:
                    continue
                if ok:
                    dependent.graph.waiting -= 1
                    if dependent.graph.waiting == 0 and dependent.state is _S.WAITING:
                        dependent.move(_S.QUEUED)
                        self._enqueue(dependent)
                else:  # it can never run: it ends the way its input did
                    pending.append((dependent, TaskResult(dependent.task_id, result.status, result.payload,
                                                          result.detail)))
            for dep in node.deps:
                ending = self._release(dep)
                if ending is not None:
                    pending.append((dep, ending))

    def _count_end(self, status: int) -> None:
        if status == STATUS_OK or status == STATUS_OK_OBJECT:
            self.finished_total += 1
        elif status == STATUS_CANCELLED:
            self.cancelled_total += 1
        else:
            self.failed_total += 1

    def _release(self, dep: Task) -> Optional[Message]:
        """One dependent of ``dep`` has ended: free or hand over its result once none is left.

        Returns how ``dep`` itself must end when nothing needs it any more, if it must.
        """
        node = dep.graph
        node.consumers -= 1
        if node.consumers > 0:
            return None
        if dep.state is _S.DONE:
            if node.held_result is not None:
                result, node.held_result = node.held_result, None
                self.send(dep.client_id, result)
            elif not node.requested and node.result_id is not None:
                self.free_objects([node.result_id])
        elif not node.requested:  # nobody wants it any more (its dependents were cancelled)
            if dep.state in (_S.ASSIGNED, _S.MOVING):
                dep.move(_S.CANCELLING)
                self.send(dep.worker_id, WorkerTaskCancel(dep.task_id, True))
            elif dep.state is not _S.CANCELLING:
                return TaskResult(dep.task_id, STATUS_CANCELLED, b"", "no longer needed")
        return None

    # --- admission ---
    def tasks_waiting(self) -> int:
        """Tasks not on a worker: queued, or graph nodes waiting for their inputs."""
        return len(self.tasks) - sum(len(worker.tasks) for worker in self.workers.values())

    def _too_busy(self, adding: int) -> bool:
        return self.tasks_waiting() + adding > self.max_tasks_waiting

    def _busy_reason(self) -> str:
        return ("the scheduler has %d tasks waiting for a worker (max_number_of_tasks_waiting = %d): "
                "submit it again later" % (self.tasks_waiting(), self.max_tasks_waiting))

    # --- graphs ---
    def graph_submitted(self, client_id: bytes, task_ids: Sequence[bytes], flags: Sequence[int],
                        func_ids: Sequence[bytes], calls: Sequence[bytes], deps: Sequence[Sequence[int]],
                        requested: Sequence[bool], priority: int = 0) -> bool:
        """Register a whole graph, or none of it: a bad one is refused on every requested node."""
        client = self.clients.get(client_id)
        if client is None:
            return False
        count = len(task_ids)
        problem = None
        if not (len(flags) == len(func_ids) == len(calls) == len(deps) == len(requested) == count):
            problem = "malformed graph: field lengths differ"
        else:
            problem = validate(task_ids, deps, self.tasks)
        if problem is None and self.max_tasks_waiting >= 0 and self._too_busy(count):
            for task_id, wanted in zip(task_ids, requested):
                if wanted:
                    self.send(client_id, TaskResult(task_id, STATUS_BUSY, b"", self._busy_reason()))
            return False
        if problem is not None:
            logger.warning("refused a graph from client %s: %s", short_id(client_id), problem)
            for task_id, wanted in zip(task_ids, requested):
                if wanted:
                    self.send(client_id, TaskResult(task_id, STATUS_REJECTED, b"", problem))
            return False
        tasks = []
        functions = client.functions
        for i in range(count):
            task = Task(task_ids[i], client_id, flags[i], functions.setdefault(func_ids[i], func_ids[i]), calls[i],
                        _NO_NEEDS, priority,
                        _S.WAITING if deps[i] else _S.QUEUED)
            task.graph = GraphNode(bool(requested[i]))
            tasks.append(task)
        for task, node_deps in zip(tasks, deps):
            node = task.graph
            for index in dict.fromkeys(node_deps):
                dep = tasks[index]
                node.deps.append(dep)
                dep.graph.dependents.append(task)
                dep.graph.consumers += 1
            node.waiting = len(node.deps)
        self.submitted_total += count
        for task in tasks:
            if task.graph.dependents:
                task.flags |= FLAG_KEEP_RESULT
            self.tasks[task.task_id] = task
            client.task_count += 1
            if task.state is _S.QUEUED:
                self._enqueue(task)
        return True

    def _finish(self, task: Task) -> None:
        """DONE: out of every table (the caller tells the client)."""
        if task.worker_id is not None:
            worker = self.workers.get(task.worker_id)
            if worker is not None and worker.tasks.pop(task.task_id, 0) is None and not worker.tasks:
                worker.idle_since = self.clock()
            task.worker_id = None
        task.move(_S.DONE)
        del self.tasks[task.task_id]
        client = self.clients.get(task.client_id)
        if client is not None:
            client.task_count -= 1

    # --- assignment ---
    def _enqueue(self, task: Task, front: bool = False) -> None:
        queue = self.queue
        if task.capabilities:
            queue = self.routed.get(task.capabilities)  # type: ignore[assignment]
            if queue is None:
                queue = self.routed[task.capabilities] = ReadyQueue()  # type: ignore[index]
        if front:
            queue.push_front(task)
        else:
            queue.push(task)

    def dispatch(self) -> int:
        """Assign ready tasks, best first, to the least loaded workers with a free slot (and,
        for tasks that need capabilities, every capability they need)."""
        if not self.workers:
            return 0
        assigned = 0
        for needs, queue in list(self.routed.items()):
            able = [w for w in self.workers.values() if needs <= w.names]
            if not able:
                if queue and needs not in self._missing_reported:
                    self._missing_reported.add(needs)
                    logger.warning("tasks need capabilities %s that no connected worker has: they wait for one",
                                   ",".join(sorted(needs)))
                continue
            self._missing_reported.discard(needs)
            assigned += self._assign(queue, able)
            assigned += self._assign_above(queue, able)
            if not queue:
                del self.routed[needs]
        if self.queue:
            assigned += self._assign(self.queue, self.workers.values())
            assigned += self._assign_above(self.queue, self.workers.values())
        return assigned

    def _assign(self, queue: ReadyQueue, workers: Iterable[WorkerInfo]) -> int:
        heap = [(len(w.tasks), i, w) for i, w in enumerate(workers) if w.free_slots > 0]
        if not heap:
            return 0
        heapq.heapify(heap)
        pop = queue.pop
        send = self.send
        assigned = 0
        while heap:
            task = pop()
            if task is None:
                break
            load, index, worker = heap[0]
            task.move(_S.ASSIGNED)
            task.worker_id = worker.worker_id
            worker.tasks[task.task_id] = None
            worker.idle_since = None
            send(worker.worker_id, WorkerTask(task.task_id, task.client_id, task.flags, task.func_id, task.call,
                                              task.priority))
            assigned += 1
            if worker.free_slots > 0:
                heapq.heapreplace(heap, (load + 1, index, worker))
            else:
                heapq.heappop(heap)
        return assigned

    def _assign_above(self, queue: ReadyQueue, workers: Iterable[WorkerInfo]) -> int:
        """Past a full worker's slots: a task that outranks every task the worker holds.

        A parent blocked on its children must not hold the only slots they could run in: a
        child (priority parent + 1) may always go to a worker whose tasks all rank lower, and
        that worker runs it at once on another processor (docs/architecture.rst, "Nested
        tasks"). Each such extra task ranks strictly above the worker's others, so the extras
        on one worker are bounded by the number of priority levels, i.e. the nesting depth.
        """
        assigned = 0
        tasks = self.tasks
        full = [w for w in workers if not w.draining and w.free_slots <= 0]
        while full:
            task = queue.peek()
            if task is None:
                break
            priority = task.priority
            best = None
            for worker in full:
                for task_id in worker.tasks:
                    if tasks[task_id].priority >= priority:
                        break
                else:
                    if best is None or len(worker.tasks) < len(best.tasks):
                        best = worker
            if best is None:
                break
            queue.pop()
            task.move(_S.ASSIGNED)
            task.worker_id = best.worker_id
            best.tasks[task.task_id] = None
            best.idle_since = None
            self.send(best.worker_id, WorkerTask(task.task_id, task.client_id, task.flags, task.func_id, task.call,
                                                 priority))
            assigned += 1
        return assigned

    def waiting_for_capabilities(self) -> Dict[FrozenSet[str], int]:
        """Ready tasks by the capability set they need, for sets no connected worker has."""
        out = {}
        for needs, queue in self.routed.items():
            if not any(needs <= w.names for w in self.workers.values()):
                count = sum(1 for _ in queue)
                if count:
                    out[needs] = count
        return out

    def balance(self) -> int:
        """When a worker sits idle while others hold queued tasks, ask those back (newest first).

        A worker gives back only tasks it has not started; they return to the front of the
        queue and ``dispatch`` hands them to the least loaded workers. Returns how many
        tasks were asked back.
        """
        workers = [w for w in self.workers.values() if not w.draining]
        idle = [w for w in workers if not w.tasks]
        if len(workers) < 2 or not idle:
            return 0
        idle_names = [w.names for w in idle]
        target = -(-sum(len(w.tasks) for w in workers) // len(workers))  # ceil(mean)
        asked = 0
        tasks = self.tasks
        for worker in workers:
            # Tasks already asked back count as gone: a balance that runs again before the
            # worker answered must not ask for them a second time over.
            moving = sum(1 for task_id in worker.tasks if tasks[task_id].state is _S.MOVING)
            excess = len(worker.tasks) - moving - target
            if excess <= 0:
                continue
            for task_id in reversed(list(worker.tasks)):
                if excess <= 0:
                    break
                task = self.tasks[task_id]
                if task.state is not _S.ASSIGNED:
                    continue
                if task.capabilities and not any(task.capabilities <= names for names in idle_names):
                    continue  # no idle worker could take it: it would only come back here
                task.move(_S.MOVING)
                self.send(worker.worker_id, WorkerTaskCancel(task_id, False))
                excess -= 1
                asked += 1
        return asked

    # --- time ---
    def expired_peers(self, now: float) -> Iterable[bytes]:
        for client in list(self.clients.values()):
            if now - client.last_seen > self.client_timeout_seconds:
                yield client.client_id
        for worker in list(self.workers.values()):
            if now - worker.last_seen > self.worker_timeout_seconds:
                yield worker.worker_id

    def shutdown_everyone(self, reason: str) -> None:
        for peer_id in list(self.clients) + list(self.workers):
            self.send(peer_id, SchedulerShutdown(reason))

    def waiting_without_worker(self) -> int:
        """Tasks queued while no worker can take any (none connected, or all draining)."""
        if any(not w.draining for w in self.workers.values()):
            return 0
        return len(self.tasks)

    # --- checking ---
    def check_invariants(self) -> None:
        """Raise AssertionError unless every task is in exactly one place (tests call this)."""
        queued = [task.task_id for queue in [self.queue] + list(self.routed.values()) for task in queue]
        assert len(queued) == len(set(queued)), "a task is queued twice"
        queued_set = set(queued)
        on_workers: Dict[bytes, bytes] = {}
        for worker in self.workers.values():
            for task_id in worker.tasks:
                assert task_id not in on_workers, "task %r on two workers" % task_id
                on_workers[task_id] = worker.worker_id
            levels = {self.tasks[task_id].priority for task_id in worker.tasks if task_id in self.tasks}
            assert len(worker.tasks) <= worker.queue_size + max(0, len(levels) - 1), \
                "worker %r holds more tasks than its slots and its priority levels allow" % worker.name
        per_client: Dict[bytes, int] = {}
        for task_id, task in self.tasks.items():
            assert task.state is not _S.DONE, "a DONE task is still held"
            assert (task_id in queued_set) == (task.state is _S.QUEUED), "%r queued iff QUEUED" % task
            if task.state in ON_WORKER:
                assert on_workers.get(task_id) == task.worker_id, "%r not on its worker" % task
            else:
                assert task.worker_id is None and task_id not in on_workers, "%r on a worker" % task
            assert task.client_id in self.clients, "%r outlived its client" % task
            per_client[task.client_id] = per_client.get(task.client_id, 0) + 1
        assert set(on_workers) <= set(self.tasks), "a worker holds a finished task"
        assert queued_set <= set(self.tasks)
        for client in self.clients.values():
            assert client.task_count == per_client.get(client.client_id, 0), \
                "client %r counts %d tasks, holds %d" % (client.client_id, client.task_count,
                                                         per_client.get(client.client_id, 0))
