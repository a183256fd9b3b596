"""The scheduler's state machine: clients, workers, tasks. No sockets in here.

Handlers are called with decoded messages and the time; they change the tables and emit
messages through the ``send(peer_id, msg)`` callable they were given, and object deletions
through ``free_owner(owner_id)`` / ``free_objects(ids)``. Tests drive this class directly.

Task life: unassigned (in ``queue``) → assigned to a worker (in ``worker.tasks``, queued
on the agent or running) → finished (a TaskResult forwarded to the client, record gone).
A worker that leaves puts its tasks back at the front of the queue; the oldest of them,
the one its processor was running, is charged a retry. Payloads (``call``) are bytes
that are stored and forwarded, never looked into.
"""

import collections
import heapq
import logging
import time
from typing import Callable, Deque, Dict, Iterable, List, Optional

from ..protocol.codec import Message
from ..protocol.messages import (STATUS_CANCELLED, ObjectDeleteOwner, STATUS_OK_OBJECT, STATUS_WORKER_DIED, SchedulerShutdown,
                                 TaskResult, WorkerTask, WorkerTaskCancel)

logger = logging.getLogger(__name__)

Send = Callable[[bytes, Message], None]


class Task:
    __slots__ = ("task_id", "client_id", "flags", "func_id", "call", "capabilities", "worker_id", "retries",
                 "moving", "cancel_requested")

    def __init__(self, task_id: bytes, client_id: bytes, flags: int, func_id: bytes, call: bytes,
                 capabilities: str) -> None:
        self.task_id = task_id
        self.client_id = client_id
        self.flags = flags
        self.func_id = func_id
        self.call = call
        self.capabilities = capabilities
        self.worker_id: Optional[bytes] = None
        self.retries = 0
        self.moving = False  # asked its worker to give it back (balancing); requeued when it does
        self.cancel_requested = False


class WorkerInfo:
    __slots__ = ("worker_id", "name", "queue_size", "capabilities", "pid", "manager_id", "tasks", "last_seen",
                 "queued_reported", "rss", "cpu", "draining", "group_id", "idle_since")

    def __init__(self, worker_id: bytes, name: str, queue_size: int, capabilities: str, pid: int,
                 manager_id: str, now: float) -> None:
        self.worker_id = worker_id
        self.name = name
        self.queue_size = max(1, queue_size)
        self.capabilities = capabilities
        self.pid = pid
        self.manager_id = manager_id
        self.tasks: Dict[bytes, None] = {}  # insertion order = the order the agent runs them
        self.last_seen = now
        self.queued_reported = 0
        self.rss = 0
        self.cpu = 0.0
        self.draining = False  # scaling down: no new tasks, shut down once empty
        self.group_id = ""  # set when a dynamic manager started this worker as a group
        self.idle_since: Optional[float] = now

    @property
    def free_slots(self) -> int:
        return 0 if self.draining else self.queue_size - len(self.tasks)


class ClientInfo:
    __slots__ = ("client_id", "tasks", "last_seen")

    def __init__(self, client_id: bytes, now: float) -> None:
        self.client_id = client_id
        self.tasks: Dict[bytes, None] = {}
        self.last_seen = now


class SchedulerState:
    def __init__(self, send: Send, free_owner: Callable[[bytes], None],
                 free_objects: Callable[[List[bytes]], None], *, max_task_retries: int = 3,
                 client_timeout_seconds: float = 60.0, worker_timeout_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.send = send
        self.clock = clock
        self.free_owner = free_owner
        self.free_objects = free_objects
        self.max_task_retries = max_task_retries
        self.client_timeout_seconds = client_timeout_seconds
        self.worker_timeout_seconds = worker_timeout_seconds
        self.tasks: Dict[bytes, Task] = {}
        self.queue: Deque[bytes] = collections.deque()  # unassigned task ids (may hold stale ids)
        self.clients: Dict[bytes, ClientInfo] = {}
        self.workers: Dict[bytes, WorkerInfo] = {}
        self.finished_count = 0

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
        if client.tasks:
            logger.info("client %s left (%s): cancelling %d task(s)", client_id.hex()[:12], reason, len(client.tasks))
        for task_id in client.tasks:
            task = self.tasks.pop(task_id, None)
            if task is not None and task.worker_id is not None:
                worker = self.workers.get(task.worker_id)
                if worker is not None:
                    worker.tasks.pop(task_id, None)
                    if not worker.tasks:
                        worker.idle_since = self.clock()
                    # Forced: nobody wants the result, and the next client should not wait for it.
                    self.send(worker.worker_id, WorkerTaskCancel(task_id, True))
        for worker_id in self.workers:
            self.send(worker_id, ObjectDeleteOwner(client_id))
        self.free_owner(client_id)

    def task_submitted(self, client_id: bytes, task_id: bytes, flags: int, func_id: bytes, call: bytes,
                       capabilities: str) -> None:
        client = self.clients.get(client_id)
        if client is None:
            return
        if task_id in self.tasks:
            self.send(client_id, TaskResult(task_id, STATUS_WORKER_DIED, b"", "duplicate task id"))
            return
        self.tasks[task_id] = Task(task_id, client_id, flags, func_id, call, capabilities)
        client.tasks[task_id] = None
        self.queue.append(task_id)

    def task_cancel_requested(self, client_id: bytes, task_id: bytes) -> None:
        task = self.tasks.get(task_id)
        if task is None or task.client_id != client_id:
            return
        if task.worker_id is None:
            self._finish(task)  # its stale id in ``queue`` is skipped by dispatch
            self.send(client_id, TaskResult(task_id, STATUS_CANCELLED, b"", "cancelled"))
        else:
            task.cancel_requested = True
            self.send(task.worker_id, WorkerTaskCancel(task_id, True))

    # --- workers ---
    def worker_connected(self, worker: WorkerInfo) -> None:
        self.workers[worker.worker_id] = worker

    def worker_seen(self, worker_id: bytes, now: float) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.last_seen = now

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
            if task is None:
                continue
            task.worker_id = None
            task.moving = False
            if task.cancel_requested:  # the client asked to cancel it: done, not re-run
                self._finish(task)
                self.send(task.client_id, TaskResult(task_id, STATUS_CANCELLED, b"", "cancelled"))
                continue
            if position == 0:  # the agent runs its tasks in order: this one was on the processor
                task.retries += 1
                if task.retries > self.max_task_retries:
                    self._finish(task)
                    self.send(task.client_id, TaskResult(
                        task_id, STATUS_WORKER_DIED, b"",
                        "worker %s died while running this task (%s); gave up after %d attempts"
                        % (worker.name, reason, task.retries)))
                    continue
            requeue.append(task_id)
        self.queue.extendleft(reversed(requeue))

    def task_result(self, worker_id: bytes, msg: Message) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.tasks.pop(msg.task_id, None)
            if not worker.tasks:
                worker.idle_since = self.clock()
        task = self.tasks.get(msg.task_id)
        if task is None or task.worker_id != worker_id:
            # The client left or cancelled meanwhile: nobody wants this result.
            if msg.status == STATUS_OK_OBJECT:
                self.free_objects([bytes(msg.payload)])
            return
        if task.moving and msg.status == STATUS_CANCELLED and not task.cancel_requested:
            task.moving = False  # given back for balancing: it goes to the front of the queue
            task.worker_id = None
            self.queue.appendleft(task.task_id)
            return
        self._finish(task)
        self.send(task.client_id, msg)

    def _finish(self, task: Task) -> None:
        self.tasks.pop(task.task_id, None)
        client = self.clients.get(task.client_id)
        if client is not None:
            client.tasks.pop(task.task_id, None)
        self.finished_count += 1

    # --- assignment ---
    def dispatch(self) -> int:
        """Assign queued tasks to the workers with the fewest tasks that have a free slot."""
        if not self.queue or not self.workers:
            return 0
        heap = [(len(w.tasks), i, w) for i, w in enumerate(self.workers.values()) if w.free_slots > 0]
        if not heap:
            return 0
        heapq.heapify(heap)
        queue = self.queue
        tasks = self.tasks
        send = self.send
        assigned = 0
        while queue and heap:
            task = tasks.get(queue.popleft())
            if task is None or task.worker_id is not None:
                continue  # cancelled or finished while queued
            load, index, worker = heap[0]
            task.worker_id = worker.worker_id
            worker.tasks[task.task_id] = None
            worker.idle_since = None
            send(worker.worker_id, WorkerTask(task.task_id, task.client_id, task.flags, task.func_id, task.call))
            assigned += 1
            if worker.free_slots > 0:
                heapq.heapreplace(heap, (load + 1, index, worker))
            else:
                heapq.heappop(heap)
        return assigned

    def balance(self) -> int:
        """When a worker sits idle while others hold queued tasks, ask those back (newest first).

        A worker gives back only tasks it has not started; they return to the front of the
        queue and ``dispatch`` hands them to the least loaded workers. Returns how many
        tasks were asked back.
        """
        workers = [w for w in self.workers.values() if not w.draining]
        if len(workers) < 2 or not any(not w.tasks for w in workers):
            return 0
        target = -(-sum(len(w.tasks) for w in workers) // len(workers))  # ceil(mean)
        asked = 0
        for worker in workers:
            excess = len(worker.tasks) - target
            if excess <= 0:
                continue
            for task_id in reversed(list(worker.tasks)):
                if excess <= 0:
                    break
                task = self.tasks.get(task_id)
                if task is None or task.moving:
                    continue
                task.moving = True
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

    @property
    def unassigned_count(self) -> int:
        return sum(1 for task in self.tasks.values() if task.worker_id is None)
