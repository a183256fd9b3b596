"""The scheduler's state machine, driven directly: no sockets, no processes."""

from scaler.protocol.messages import (STATUS_BUSY, STATUS_PROCESSOR_DIED, FLAG_KEEP_RESULT, STATUS_CANCELLED, STATUS_FAILED, STATUS_OK, STATUS_OK_OBJECT,
                                      STATUS_REJECTED, STATUS_WORKER_DIED,
                                      ObjectDeleteOwner, SchedulerShutdown, TaskResult, WorkerTask, WorkerTaskCancel)
from scaler.scheduler.state import SchedulerState, WorkerInfo


class Harness:
    def __init__(self, **kwargs):
        self.sent = []
        self.freed_owners = []
        self.freed_objects = []
        self.now = 100.0
        self.state = SchedulerState(lambda peer, msg: self.sent.append((peer, msg)), self.freed_owners.append,
                                    self.freed_objects.extend, clock=lambda: self.now, **kwargs)

    def queued(self):
        return [task.task_id for task in self.state.queue]

    def take(self, kind=None):
        out = [(p, m) for p, m in self.sent if kind is None or type(m) is kind]
        self.sent = [(p, m) for p, m in self.sent if not (kind is None or type(m) is kind)]
        return out

    def worker(self, name, queue_size=1000):
        worker_id = name.encode()
        self.state.worker_connected(WorkerInfo(worker_id, name, queue_size, "", 1, "", self.now))
        return worker_id

    def submit(self, client, n, prefix=b"t"):
        ids = []
        for i in range(n):
            task_id = prefix + b"%04d" % i
            self.state.task_submitted(client, task_id, 0, b"f" * 32, b"call", "")
            ids.append(task_id)
        return ids


def test_tasks_go_to_the_least_loaded_worker():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    a, b = h.worker("a"), h.worker("b")
    h.submit(b"c", 10)
    assert h.state.dispatch() == 10
    sent = h.take(WorkerTask)
    assert sorted(p for p, _ in sent).count(a) == 5 and sorted(p for p, _ in sent).count(b) == 5
    assert all(m.client_id == b"c" and m.call == b"call" for _, m in sent)


def test_queue_size_is_a_hard_limit_and_the_rest_waits():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    w = h.worker("a", queue_size=3)
    h.submit(b"c", 5)
    assert h.state.dispatch() == 3
    assert len(h.queued()) == 2
    h.take()
    first = next(iter(h.state.workers[w].tasks))
    h.state.task_result(w, TaskResult(first, STATUS_OK, b"r", ""))
    assert h.take(TaskResult) == [(b"c", TaskResult(first, STATUS_OK, b"r", ""))]
    assert h.state.dispatch() == 1


def test_worker_loss_requeues_everything_and_charges_only_the_running_task():
    h = Harness(max_task_retries=1)
    h.state.client_connected(b"c", h.now)
    a = h.worker("a")
    ids = h.submit(b"c", 3)
    h.state.dispatch()
    h.state.worker_disconnected(a, "killed")
    assert h.queued() == ids  # same order, at the front
    assert [h.state.tasks[i].retries for i in ids] == [1, 0, 0]
    b = h.worker("b")
    h.state.dispatch()
    h.take()
    h.state.worker_disconnected(b, "killed again")
    # the running task is past the retry limit: the client is told, nothing is lost silently
    failed = h.take(TaskResult)
    assert failed == [(b"c", failed[0][1])] and failed[0][1].status == STATUS_WORKER_DIED
    assert failed[0][1].task_id == ids[0] and "gave up" in failed[0][1].detail
    assert h.queued() == ids[1:]


def test_client_disconnect_cancels_its_tasks_and_frees_its_objects():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    h.state.client_connected(b"d", h.now)
    a = h.worker("a")
    h.submit(b"c", 2, b"c")
    h.submit(b"d", 1, b"d")
    h.state.dispatch()
    h.take()
    h.state.client_disconnected(b"c", "gone")
    cancels = h.take(WorkerTaskCancel)
    assert sorted(m.task_id for _, m in cancels) == [b"c0000", b"c0001"]
    assert all(m.force for _, m in cancels)  # running ones are stopped too: nobody wants them
    assert h.take(ObjectDeleteOwner) == [(a, ObjectDeleteOwner(b"c"))]
    assert h.freed_owners == [b"c"]
    assert list(h.state.tasks) == [b"d0000"]
    # a late result for a dropped task frees its stored result object
    h.state.task_result(a, TaskResult(b"c0000", STATUS_OK_OBJECT, b"o" * 32, ""))
    assert h.take(TaskResult) == [] and h.freed_objects == [b"o" * 32]


def test_cancel_of_a_queued_task_answers_at_once_and_of_an_assigned_one_forces_the_worker():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    ids = h.submit(b"c", 1)
    h.state.task_cancel_requested(b"c", ids[0])
    assert h.take(TaskResult) == [(b"c", TaskResult(ids[0], STATUS_CANCELLED, b"", "cancelled"))]
    assert h.state.dispatch() == 0
    w = h.worker("w")
    ids = h.submit(b"c", 1, b"x")
    h.state.dispatch()
    h.take()
    h.state.task_cancel_requested(b"c", ids[0])
    assert h.take(WorkerTaskCancel) == [(w, WorkerTaskCancel(ids[0], True))]
    h.state.task_cancel_requested(b"other", ids[0])  # not its task: ignored
    assert h.take() == []


def test_balance_takes_back_queued_tasks_for_an_idle_worker():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    a = h.worker("a")
    ids = h.submit(b"c", 10)
    h.state.dispatch()
    h.take()
    b = h.worker("b")
    assert h.state.balance() == 5
    asked = h.take(WorkerTaskCancel)
    assert [m.task_id for _, m in asked] == ids[:4:-1]  # newest first, not forced
    assert all(p == a and not m.force for p, m in asked)
    # the worker gives back three; two had already started and finish normally
    for _, m in asked[:3]:
        h.state.task_result(a, TaskResult(m.task_id, STATUS_CANCELLED, b"", "cancelled"))
    assert h.take(TaskResult) == []  # nothing reaches the client
    assert h.state.dispatch() == 3
    assert [p for p, _ in h.take(WorkerTask)] == [b, b, b]
    assert h.state.balance() == 0  # nobody is idle any more


def test_a_worker_running_out_of_tasks_is_flagged_for_balancing():
    """The server balances when a worker goes idle (went_idle), not only on its timer."""
    h = Harness()
    h.state.client_connected(b"c", h.now)
    a = h.worker("a")
    ids = h.submit(b"c", 2)
    h.state.dispatch()
    h.take()
    assert not h.state.went_idle
    h.state.task_result(a, TaskResult(ids[0], STATUS_OK, b"r", ""))
    assert not h.state.went_idle  # one task left on it
    h.state.task_result(a, TaskResult(ids[1], STATUS_OK, b"r", ""))
    assert h.state.went_idle


def test_balancing_again_before_the_worker_answered_asks_for_nothing_more():
    """Tasks already asked back count as gone: a second balance (two workers going idle in
    one read) must not ask the busy worker for more than its excess."""
    h = Harness()
    h.state.client_connected(b"c", h.now)
    a = h.worker("a")
    ids = h.submit(b"c", 4)
    h.state.dispatch()
    h.take()
    h.worker("b")
    h.worker("c")
    first = h.state.balance()
    assert first == 2  # 4 tasks over 3 workers: a keeps ceil(4/3) = 2
    assert h.state.balance() == 0 and h.state.balance() == 0
    assert len(h.take(WorkerTaskCancel)) == 2
    h.state.check_invariants()
    del a, ids


def test_a_client_cancel_wins_over_a_balancing_move():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    a = h.worker("a")
    ids = h.submit(b"c", 4)
    h.state.dispatch()
    h.worker("b")
    h.state.balance()
    h.take()
    h.state.task_cancel_requested(b"c", ids[-1])
    h.state.task_result(a, TaskResult(ids[-1], STATUS_CANCELLED, b"", "cancelled"))
    assert h.take(TaskResult) == [(b"c", TaskResult(ids[-1], STATUS_CANCELLED, b"", "cancelled"))]
    assert ids[-1] not in h.state.tasks


def test_draining_workers_get_nothing_new_and_idle_time_is_tracked():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    a, b = h.worker("a"), h.worker("b")
    h.state.set_draining(a, True)
    h.submit(b"c", 4)
    h.state.dispatch()
    assert {p for p, _ in h.take(WorkerTask)} == {b}
    assert h.state.workers[b].idle_since is None and h.state.workers[a].idle_since == 100.0
    assert h.state.waiting_without_worker() == 0
    h.state.set_draining(b, True)
    assert h.state.waiting_without_worker() == 4


def test_timeouts_and_shutdown_reach_everyone():
    h = Harness(client_timeout_seconds=10, worker_timeout_seconds=5)
    h.state.client_connected(b"c", h.now)
    w = h.worker("w")
    assert list(h.state.expired_peers(h.now + 4)) == []
    assert list(h.state.expired_peers(h.now + 6)) == [w]
    h.state.client_seen(b"c", h.now + 5)
    assert list(h.state.expired_peers(h.now + 11)) == [w]
    h.state.shutdown_everyone("bye")
    assert sorted(p for p, m in h.take(SchedulerShutdown)) == [b"c", w]


def test_a_task_cancelled_on_a_worker_that_then_dies_is_not_run_again():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    a = h.worker("a")
    ids = h.submit(b"c", 2)
    h.state.dispatch()
    h.state.task_cancel_requested(b"c", ids[0])
    h.take()
    h.state.worker_disconnected(a, "killed")
    assert h.take(TaskResult) == [(b"c", TaskResult(ids[0], STATUS_CANCELLED, b"", "cancelled"))]
    assert h.queued() == [ids[1]]


# --- graphs ---

def graph(h, client, deps, requested, priority=0):
    ids = [b"n%d" % i for i in range(len(deps))]
    ok = h.state.graph_submitted(client, ids, [0] * len(ids), [b"f"] * len(ids), [b"c"] * len(ids), deps,
                                 requested, priority)
    return ids, ok


def run_all(h, worker_id, status=STATUS_OK_OBJECT, fail=()):
    """The worker answers everything it was sent, storing results under the task id as agents do."""
    done = []
    for _, msg in h.take(WorkerTask):
        if msg.task_id in fail:
            h.state.task_result(worker_id, TaskResult(msg.task_id, STATUS_FAILED, b"exc", "Traceback: boom"))
        elif msg.flags & FLAG_KEEP_RESULT:
            h.state.task_result(worker_id, TaskResult(msg.task_id, STATUS_OK_OBJECT, msg.task_id, ""))
        else:
            h.state.task_result(worker_id, TaskResult(msg.task_id, STATUS_OK, b"r", ""))
        done.append(msg.task_id)
    h.state.check_invariants()
    return done


def test_a_diamond_runs_in_dependency_order_and_frees_its_intermediates():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    w = h.worker("w")
    (a, b, c, d), ok = graph(h, b"c", [[], [0], [0], [1, 2]], [False, False, False, True])
    assert ok and h.queued() == [a]
    h.state.dispatch()
    assert run_all(h, w) == [a]
    h.state.dispatch()
    assert sorted(run_all(h, w)) == [b, c]
    assert h.freed_objects == [a]  # nobody needs it any more
    h.state.dispatch()
    assert run_all(h, w) == [d]
    assert sorted(h.freed_objects) == [a, b, c]
    assert h.take(TaskResult) == [(b"c", TaskResult(d, STATUS_OK, b"r", ""))]  # only the key asked for
    assert not h.state.tasks


def test_only_nodes_with_dependents_are_told_to_keep_their_result():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    h.worker("w")
    graph(h, b"c", [[], [0]], [True, True])
    h.state.dispatch()
    (_, first), = h.take(WorkerTask)
    assert first.flags & FLAG_KEEP_RESULT


def test_a_failing_node_fails_everything_downstream_with_its_exception_and_spares_other_branches():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    w = h.worker("w")
    # 0 -> 1 -> 2 (requested), 0 -> 3 (requested); 4 -> 5 (requested) is unrelated
    ids, _ = graph(h, b"c", [[], [0], [1], [0], [], [4]], [False, False, True, True, False, True])
    h.state.dispatch()
    run_all(h, w, fail={ids[0]})
    failed = sorted(h.take(TaskResult), key=lambda sent: sent[1].task_id)
    assert failed == [(b"c", TaskResult(ids[2], STATUS_FAILED, b"exc", "Traceback: boom")),
                      (b"c", TaskResult(ids[3], STATUS_FAILED, b"exc", "Traceback: boom"))]
    h.state.dispatch()
    assert run_all(h, w) == [ids[5]]
    assert h.take(TaskResult) == [(b"c", TaskResult(ids[5], STATUS_OK, b"r", ""))]
    assert not h.state.tasks and h.freed_objects == [ids[4]]


def test_a_bad_graph_is_refused_whole_and_every_requested_node_hears_why():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    for deps, why in (([[1], [0]], "cycle"), ([[0]], "cycle"), ([[], [5]], "not in the graph")):
        ids, ok = graph(h, b"c", deps, [True] * len(deps))
        assert not ok and not h.state.tasks and not h.queued()
        refused = h.take(TaskResult)
        assert [m.task_id for _, m in refused] == ids
        assert all(m.status == STATUS_REJECTED and why in m.detail for _, m in refused)
    h.state.task_submitted(b"c", b"n0", 0, b"f", b"c", "")  # an id in use
    ids, ok = graph(h, b"c", [[]], [True])
    assert not ok and "already in use" in h.take(TaskResult)[0][1].detail


def test_a_requested_intermediate_reaches_the_client_after_its_dependents_have_read_it():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    w = h.worker("w")
    (a, b), _ = graph(h, b"c", [[], [0]], [True, True])
    h.state.dispatch()
    run_all(h, w)
    assert h.take(TaskResult) == []  # the client deletes what it reads: not yet
    h.state.dispatch()
    run_all(h, w)
    assert [m.task_id for _, m in h.take(TaskResult)] == [b, a]
    assert h.freed_objects == []  # the client frees a requested result after reading it


def test_cancelling_the_requested_key_cancels_the_nodes_only_it_needed():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    w = h.worker("w")
    (a, b, c), _ = graph(h, b"c", [[], [0], [1]], [False, False, True])
    h.state.dispatch()
    h.take()
    h.state.task_cancel_requested(b"c", c)
    assert h.take(TaskResult) == [(b"c", TaskResult(c, STATUS_CANCELLED, b"", "cancelled"))]
    assert h.take(WorkerTaskCancel) == [(w, WorkerTaskCancel(a, True))]  # running, and nobody needs it now
    h.state.task_result(w, TaskResult(a, STATUS_CANCELLED, b"", ""))
    assert not h.state.tasks and h.take() == []
    h.state.check_invariants()


def test_a_10000_node_chain_fails_from_its_root_without_recursion():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    w = h.worker("w")
    count = 10000
    ids, ok = graph(h, b"c", [[]] + [[i] for i in range(count - 1)], [False] * (count - 1) + [True])
    assert ok
    h.state.dispatch()
    run_all(h, w, fail={ids[0]})
    assert h.take(TaskResult) == [(b"c", TaskResult(ids[-1], STATUS_FAILED, b"exc", "Traceback: boom"))]
    assert not h.state.tasks


def test_graph_nodes_keep_their_priority():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    h.submit(b"c", 2, b"low")
    graph(h, b"c", [[], []], [True, True], priority=1)
    assert h.queued() == [b"n0", b"n1", b"low0000", b"low0001"]


# --- capabilities ---

def test_allocate_capability_sends_a_task_only_to_workers_with_every_name_it_needs(caplog):
    h = Harness(route_by_capability=True)
    h.state.client_connected(b"c", h.now)
    plain = h.worker("plain")
    h.state.worker_connected(WorkerInfo(b"gpu1", "gpu1", 1000, "linux,gpu=2", 1, "", h.now))
    h.state.worker_connected(WorkerInfo(b"gpu2", "gpu2", 1000, "gpu", 1, "", h.now))
    for i in range(4):
        h.state.task_submitted(b"c", b"g%d" % i, 0, b"f", b"call", "gpu=1")
    h.state.task_submitted(b"c", b"both", 0, b"f", b"call", "gpu,linux")
    h.state.task_submitted(b"c", b"tpu", 0, b"f", b"call", "tpu")
    h.submit(b"c", 3)
    h.state.dispatch()
    placed = {m.task_id: p for p, m in h.take(WorkerTask)}
    assert {placed[b"g%d" % i] for i in range(4)} == {b"gpu1", b"gpu2"}  # balanced among the able ones
    assert placed[b"both"] == b"gpu1"
    assert b"tpu" not in placed and h.queued() == []  # never sent to a worker that cannot run it
    assert placed[b"t0000"] == plain or set(placed.values()) >= {plain}
    assert "tpu" in caplog.text and caplog.text.count("no connected worker has") == 1
    h.state.dispatch()
    assert caplog.text.count("no connected worker has") == 1  # said once
    assert h.state.waiting_for_capabilities() == {frozenset({"tpu"}): 1}
    h.state.worker_connected(WorkerInfo(b"tpu1", "tpu1", 1000, "tpu=1", 1, "", h.now))
    h.state.dispatch()
    assert [(p, m.task_id) for p, m in h.take(WorkerTask)] == [(b"tpu1", b"tpu")]
    h.state.check_invariants()


def test_even_load_ignores_capabilities():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    w = h.worker("plain")
    h.state.task_submitted(b"c", b"g", 0, b"f", b"call", "gpu=1")
    h.state.dispatch()
    assert [p for p, _ in h.take(WorkerTask)] == [w]


def test_balancing_moves_a_routed_task_only_to_an_idle_worker_that_can_run_it():
    h = Harness(route_by_capability=True)
    h.state.client_connected(b"c", h.now)
    h.state.worker_connected(WorkerInfo(b"gpu1", "gpu1", 1000, "gpu", 1, "", h.now))
    for i in range(4):
        h.state.task_submitted(b"c", b"g%d" % i, 0, b"f", b"call", "gpu")
    h.state.dispatch()
    h.take()
    h.worker("plain")  # idle, but cannot run them
    assert h.state.balance() == 0
    h.state.worker_connected(WorkerInfo(b"gpu2", "gpu2", 1000, "gpu", 1, "", h.now))
    assert h.state.balance() == 2


# --- priorities and nested tasks ---

def test_tasks_reach_the_worker_with_their_priority():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    h.worker("a")
    h.state.task_submitted(b"c", b"t", 0, b"f", b"call", "", -7)
    h.state.dispatch()
    assert [m.priority for _, m in h.take(WorkerTask)] == [-7]


def test_a_full_worker_still_takes_a_task_that_outranks_everything_it_holds():
    """A parent waiting for its child must not hold the only slot the child could use."""
    h = Harness()
    h.state.client_connected(b"c", h.now)
    w = h.worker("a", queue_size=1)
    h.state.task_submitted(b"c", b"parent", 0, b"f", b"call", "", 0)
    h.state.task_submitted(b"c", b"sibling", 0, b"f", b"call", "", 0)
    assert h.state.dispatch() == 1
    h.take()
    h.state.task_submitted(b"c", b"child", 0, b"f", b"call", "", 1)
    h.state.task_submitted(b"c", b"child2", 0, b"f", b"call", "", 1)
    assert h.state.dispatch() == 1  # the first child only: its sibling does not outrank it
    assert [m.task_id for _, m in h.take(WorkerTask)] == [b"child"]
    h.state.task_submitted(b"c", b"grandchild", 0, b"f", b"call", "", 2)
    assert h.state.dispatch() == 1
    assert list(h.state.workers[w].tasks) == [b"parent", b"child", b"grandchild"]
    assert [m.task_id for _, m in h.take(WorkerTask)] == [b"grandchild"]
    h.state.check_invariants()
    h.state.task_result(w, TaskResult(b"grandchild", STATUS_OK, b"", ""))
    h.state.task_result(w, TaskResult(b"child", STATUS_OK, b"", ""))
    assert h.state.dispatch() == 1  # child2 now outranks the parent
    assert [m.task_id for _, m in h.take(WorkerTask)] == [b"child2"]
    assert [t.task_id for t in h.state.queue] == [b"sibling"]


def test_an_outranking_task_goes_to_the_full_worker_holding_fewest_tasks_and_never_to_a_draining_one():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    a, b, c = h.worker("a", queue_size=2), h.worker("b", queue_size=1), h.worker("c", queue_size=1)
    for i in range(4):
        h.state.task_submitted(b"c", b"p%d" % i, 0, b"f", b"call", "", 0)
    h.state.dispatch()
    h.take()
    h.state.set_draining(c, True)
    h.state.task_submitted(b"c", b"child", 0, b"f", b"call", "", 5)
    assert h.state.dispatch() == 1
    assert h.take(WorkerTask)[0][0] == b


def test_equal_priorities_never_exceed_a_workers_slots():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    w = h.worker("a", queue_size=2)
    for i in range(5):
        h.state.task_submitted(b"c", b"t%d" % i, 0, b"f", b"call", "", 3)
    assert h.state.dispatch() == 2
    assert len(h.state.workers[w].tasks) == 2


def test_a_dead_processor_reruns_its_task_up_to_the_retry_limit():
    h = Harness(max_task_retries=2)
    h.state.client_connected(b"c", h.now)
    w = h.worker("a")
    (task_id,) = h.submit(b"c", 1)
    for attempt in (1, 2):
        assert h.state.dispatch() == 1
        h.take()
        h.state.task_result(w, TaskResult(task_id, STATUS_PROCESSOR_DIED, b"", "killed by signal SIGKILL"))
        assert h.take(TaskResult) == [] and h.queued() == [task_id]  # the client is not told: it runs again
        assert h.state.tasks[task_id].retries == attempt
        h.state.check_invariants()
    h.state.dispatch()
    h.take()
    h.state.task_result(w, TaskResult(task_id, STATUS_PROCESSOR_DIED, b"", "killed by signal SIGKILL"))
    ((client, result),) = h.take(TaskResult)
    assert client == b"c" and result.status == STATUS_PROCESSOR_DIED
    assert result.detail == "killed by signal SIGKILL; gave up after 3 attempts"
    assert task_id not in h.state.tasks
    h.state.check_invariants()


def test_a_dead_processor_does_not_rerun_a_task_being_cancelled():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    w = h.worker("a")
    (task_id,) = h.submit(b"c", 1)
    h.state.dispatch()
    h.state.task_cancel_requested(b"c", task_id)
    h.take()
    h.state.task_result(w, TaskResult(task_id, STATUS_PROCESSOR_DIED, b"", "killed"))
    ((_, result),) = h.take(TaskResult)
    assert result.status == STATUS_PROCESSOR_DIED and task_id not in h.state.tasks


def test_past_max_tasks_waiting_a_submit_is_refused_and_nothing_is_registered():
    h = Harness(max_tasks_waiting=3)
    h.state.client_connected(b"c", h.now)
    h.submit(b"c", 5)
    refused = h.take(TaskResult)
    assert [m.task_id for _, m in refused] == [b"t0003", b"t0004"]
    assert all(m.status == STATUS_BUSY and "max_number_of_tasks_waiting = 3" in m.detail for _, m in refused)
    assert h.state.tasks_waiting() == 3 and len(h.state.tasks) == 3
    w = h.worker("a", queue_size=2)  # tasks on a worker do not wait any more
    h.state.dispatch()
    assert h.state.tasks_waiting() == 1
    h.take()
    h.submit(b"c", 2, prefix=b"u")
    assert h.take(TaskResult) == [] and h.state.tasks_waiting() == 3
    # a graph is admitted whole or refused whole
    assert not h.state.graph_submitted(b"c", [b"g1", b"g2"], [0, 0], [b"f" * 32] * 2, [b"c"] * 2, [[], [0]],
                                       [False, True])
    ((_, busy),) = h.take(TaskResult)
    assert (busy.task_id, busy.status) == (b"g2", STATUS_BUSY) and b"g1" not in h.state.tasks
    h.state.check_invariants()
    assert w in h.state.workers


def test_no_limit_by_default():
    h = Harness()
    h.state.client_connected(b"c", h.now)
    h.submit(b"c", 500)
    assert h.take(TaskResult) == [] and h.state.tasks_waiting() == 500


def test_task_output_goes_to_the_tasks_client_only_while_the_worker_runs_it():
    from scaler.protocol.messages import TaskOutput
    h = Harness()
    h.state.client_connected(b"c", h.now)
    w, other = h.worker("a", queue_size=1), h.worker("b", queue_size=0)
    (task_id,) = h.submit(b"c", 1)
    h.state.task_output(w, TaskOutput(task_id, 1, b"too early\n"))  # not that worker's yet
    assert h.take(TaskOutput) == []
    h.state.dispatch()
    h.take()
    h.state.task_output(w, TaskOutput(task_id, 1, b"hello\n"))
    h.state.task_output(other, TaskOutput(task_id, 1, b"forged\n"))  # another worker's claim
    assert [(p, bytes(m.data)) for p, m in h.take(TaskOutput)] == [(b"c", b"hello\n")]
    h.state.task_result(w, TaskResult(task_id, STATUS_OK, b"r", ""))
    h.state.task_output(w, TaskOutput(task_id, 1, b"after the end\n"))
    assert h.take(TaskOutput) == []


def test_the_status_snapshot_counts_each_clients_tasks_not_done():
    # Regression: the snapshot read an index of a client's tasks that became a count
    # (every monitor, the dashboard and scaler_top failed until it was fixed).
    import json
    from scaler.scheduler.status import build_snapshot
    h = Harness()
    h.state.client_connected(b"c", h.now)
    h.state.client_connected(b"d", h.now)
    a = h.worker("a")
    ids = h.submit(b"c", 3, b"c")
    h.state.dispatch()
    h.state.task_result(a, TaskResult(ids[0], STATUS_OK, b"r", ""))
    snapshot = build_snapshot(h.state, now=h.now, wall_time=0.0, scheduler={}, rates={})
    json.dumps(snapshot)
    assert {row["id"]: row["tasks"] for row in snapshot["clients"]} == {b"c".hex(): 2, b"d".hex(): 0}


def test_a_second_result_for_a_task_counts_once_and_reaches_the_client_once():
    """A result can come twice (a task that ended as its cancel or its worker's timeout
    was being answered): the worker's done count and the client see one."""
    h = Harness()
    h.state.client_connected(b"c", h.now)
    w = h.worker("a")
    (task_id,) = h.submit(b"c", 1)
    h.state.dispatch()
    h.take()
    h.state.task_result(w, TaskResult(task_id, STATUS_OK, b"r", ""))
    h.state.task_result(w, TaskResult(task_id, STATUS_FAILED, b"", "late"))
    assert h.take(TaskResult) == [(b"c", TaskResult(task_id, STATUS_OK, b"r", ""))]
    assert h.state.workers[w].done == 1
