"""Random event sequences against the scheduler's state, with its invariants checked after each.

The simulated workers behave like real agents: they run their tasks in arrival order
(the first is running), give back unstarted tasks when asked without force, stop any
task when asked with force, and answer every task they hold exactly once.
"""

import collections
import os
import random

import pytest

from scaler.protocol.messages import (FLAG_KEEP_RESULT, STATUS_CANCELLED, STATUS_FAILED, STATUS_OK,
                                      STATUS_OK_OBJECT, TaskResult, WorkerTask, WorkerTaskCancel)
from scaler.scheduler.state import SchedulerState, WorkerInfo
from scaler.scheduler.task import IllegalTransition, Task, TaskState, edges


class World:
    def __init__(self, rng, max_task_retries, route_by_capability=False):
        self.rng = rng
        self.now = 0.0
        self.inbox = collections.defaultdict(list)  # peer -> messages the scheduler sent it
        self.freed = collections.Counter()  # object id -> times the scheduler freed it
        self.state = SchedulerState(lambda peer, msg: self.inbox[peer].append(msg), lambda owner: None,
                                    lambda ids: self.freed.update(bytes(i) for i in ids), clock=lambda: self.now,
                                    max_task_retries=max_task_retries, route_by_capability=route_by_capability)
        self.flags = {}  # task id -> flags it reached a worker with
        self.stored = set()  # graph results a worker stored (kept for other tasks)
        self.held = {}  # worker id -> task ids in the order the agent got them
        self.results = collections.Counter()  # task id -> TaskResults the client got
        self.submitted = {}  # task id -> client id
        self.clients = set()
        self.left_clients = set()
        self.cancelled = set()  # task ids a client asked to cancel
        self.ancestors = {}  # graph node -> itself and every node upstream of it
        self.graph_owner = {}
        self.internal = set()  # graph nodes nobody asked for: the client must never hear of them
        self.counter = 0

    # --- the simulated peers ---
    def deliver(self, workers=None):
        """Workers (all, or the ones named) read what the scheduler sent them; clients always do."""
        for worker_id in list(self.held) if workers is None else workers:
            messages, self.inbox[worker_id] = self.inbox[worker_id], []
            for msg in messages:
                held = self.held.get(worker_id)
                if held is None:
                    break
                if type(msg) is WorkerTask:
                    held.append(msg.task_id)
                    self.flags[msg.task_id] = msg.flags
                elif type(msg) is WorkerTaskCancel and msg.task_id in held:
                    if msg.force or held.index(msg.task_id) > 0:
                        held.remove(msg.task_id)
                        self.state.task_result(worker_id, TaskResult(msg.task_id, STATUS_CANCELLED, b"", ""))
        for client_id in list(self.clients):
            messages, self.inbox[client_id] = self.inbox[client_id], []
            for msg in messages:
                if type(msg) is TaskResult:
                    assert msg.task_id not in self.internal, "the client got an intermediate result"
                    self.results[msg.task_id] += 1
                    upstream = self.ancestors.get(msg.task_id, {msg.task_id})
                    assert msg.status != STATUS_CANCELLED or upstream & self.cancelled, \
                        "task %r ended cancelled though nobody cancelled it" % msg.task_id

    def run_one(self, worker_id):
        held = self.held[worker_id]
        if held:
            task_id = held.pop(0)
            status = self.rng.choice((STATUS_OK, STATUS_OK, STATUS_OK, STATUS_FAILED, STATUS_OK_OBJECT))
            payload = b"o" + task_id  # an object id, if the status says so
            if self.flags[task_id] & FLAG_KEEP_RESULT and status != STATUS_FAILED:
                status, payload = STATUS_OK_OBJECT, task_id  # stored under its own id, as agents do
                self.stored.add(task_id)
            self.state.task_result(worker_id, TaskResult(task_id, status, payload, ""))

    # --- events ---
    def step(self):
        rng = self.rng
        event = rng.choice(("submit", "submit", "graph", "graph", "dispatch", "dispatch", "run", "run", "run", "cancel",
                            "worker", "lose_worker", "client", "lose_client", "balance", "drain", "read", "read"))
        state = self.state
        if event == "submit" and self.clients:
            client_id = rng.choice(sorted(self.clients))
            for _ in range(rng.randint(1, 5)):
                self.counter += 1
                task_id = b"t%06d" % self.counter
                self.submitted[task_id] = client_id
                state.task_submitted(client_id, task_id, 0, b"f", b"call", rng.choice(("", "", "gpu=1", "gpu,tpu")),
                                     rng.choice((0, 0, 1, 2)))
        elif event == "graph" and self.clients:
            self.submit_graph(rng.choice(sorted(self.clients)))
        elif event == "dispatch":
            state.dispatch()
        elif event == "run" and self.held:
            self.run_one(rng.choice(sorted(self.held)))
        elif event == "read" and self.held:
            self.deliver([rng.choice(sorted(self.held))])
        elif event == "cancel" and self.submitted:
            task_id = rng.choice(sorted(self.submitted))
            self.cancelled.add(task_id)
            state.task_cancel_requested(self.submitted[task_id], task_id)
        elif event == "worker" and len(self.held) < 4:
            self.counter += 1
            worker_id = b"w%06d" % self.counter
            self.held[worker_id] = []
            state.worker_connected(WorkerInfo(worker_id, worker_id.decode(), rng.choice((1, 2, 5, 100)),
                                              rng.choice(("", "gpu=2", "linux,gpu,tpu")), 1, "", self.now))
        elif event == "lose_worker" and self.held:
            worker_id = rng.choice(sorted(self.held))
            del self.held[worker_id]
            self.inbox.pop(worker_id, None)
            state.worker_disconnected(worker_id, "lost")
        elif event == "client" and len(self.clients) < 3:
            self.counter += 1
            client_id = b"c%06d" % self.counter
            self.clients.add(client_id)
            state.client_connected(client_id, self.now)
        elif event == "lose_client" and self.clients and rng.random() < 0.3:
            client_id = rng.choice(sorted(self.clients))
            self.clients.discard(client_id)
            self.left_clients.add(client_id)
            state.client_disconnected(client_id, "left")
        elif event == "balance":
            state.balance()
        elif event == "drain" and self.held:
            state.set_draining(rng.choice(sorted(self.held)), rng.random() < 0.5)
        self.now += 0.1
        self.deliver([])

    def submit_graph(self, client_id):
        """A random DAG: each node depends on up to three earlier ones; some are requested."""
        rng = self.rng
        count = rng.randint(1, 12)
        ids, deps, requested = [], [], []
        for i in range(count):
            self.counter += 1
            ids.append(b"g%06d" % self.counter)
            deps.append(rng.sample(range(i), min(i, rng.randint(0, 3))))
            requested.append(rng.random() < 0.4 or i == count - 1)
        for task_id, node_deps in zip(ids, deps):
            self.ancestors[task_id] = {task_id}.union(*(self.ancestors[ids[d]] for d in node_deps))
        for task_id in ids:
            self.graph_owner[task_id] = client_id
        for task_id, wanted in zip(ids, requested):
            if wanted:
                self.submitted[task_id] = client_id
            else:
                self.internal.add(task_id)
        assert self.state.graph_submitted(client_id, ids, [0] * count, [b"f"] * count, [b"call"] * count, deps,
                                          requested, rng.choice((0, 1)))

    def settle(self):
        """Undrain, add a worker, and run until nothing is left."""
        for worker_id in self.held:
            self.state.set_draining(worker_id, False)
        self.counter += 1
        spare = b"w%06d" % self.counter
        self.held[spare] = []
        self.state.worker_connected(WorkerInfo(spare, "spare", 1000, "gpu,tpu", 1, "", self.now))
        for _ in range(100000):
            self.state.dispatch()
            self.deliver()
            busy = [w for w, held in self.held.items() if held]
            if not busy and not self.state.tasks:
                return
            for worker_id in busy:
                self.run_one(worker_id)
            self.deliver()
            self.state.check_invariants()
        raise AssertionError("did not settle: %r" % list(self.state.tasks.values())[:5])


@pytest.mark.parametrize("seed", range(int(os.environ.get("SCALER_STATE_SEEDS", "60"))))
def test_random_event_sequences_keep_every_task_in_one_place_and_end_every_future_once(seed):
    rng = random.Random(seed)
    world = World(rng, max_task_retries=rng.choice((0, 1, 3)), route_by_capability=seed % 2 == 1)
    for _ in range(400):
        world.step()
        world.state.check_invariants()
        assert max(world.results.values(), default=0) <= 1, "a future ended twice"
    world.settle()
    world.state.check_invariants()
    for task_id, client_id in world.submitted.items():
        if client_id in world.clients:
            assert world.results[task_id] == 1, "task %r of a live client never ended" % task_id
        else:
            assert world.results[task_id] <= 1
    assert not world.state.tasks
    assert max(world.freed.values(), default=0) <= 1, "an object was freed twice"
    for task_id in world.stored:
        if world.graph_owner[task_id] not in world.clients:
            continue  # its objects went with its owner
        if task_id in world.internal:
            assert world.freed[task_id] == 1, "intermediate %r never freed" % task_id
        else:
            assert world.freed[task_id] == 0, "the scheduler freed a result the client must read"


def test_an_illegal_transition_raises():
    task = Task(b"t", b"c", 0, b"f", b"", frozenset())
    task.move(TaskState.DONE)
    with pytest.raises(IllegalTransition):
        task.move(TaskState.QUEUED)
    assert (TaskState.QUEUED, TaskState.ASSIGNED) in edges()
    assert not [edge for edge in edges() if edge[0] is TaskState.DONE]


def test_higher_priorities_run_first_and_equal_ones_in_submission_order():
    sent = []
    state = SchedulerState(lambda peer, msg: sent.append(msg), lambda o: None, lambda ids: None, clock=lambda: 0.0)
    state.client_connected(b"c", 0.0)
    for i, priority in enumerate((0, 2, 1, 2, 0, 1)):
        state.task_submitted(b"c", b"t%d" % i, 0, b"f", b"", "", priority)
    state.worker_connected(WorkerInfo(b"w", "w", 100, "", 1, "", 0.0))
    state.dispatch()
    assert [m.task_id for m in sent] == [b"t1", b"t3", b"t2", b"t5", b"t0", b"t4"]
