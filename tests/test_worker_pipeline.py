"""A worker's task pipeline, driven directly: no sockets, no processes, a fake clock.

A fake effects object records what the pipeline asks of its host (the scheduler's
``worker_host.py``); each test feeds it the events the host would (tasks, objects passed to
the processor, processor results, deaths) and checks what went where.
"""

import pytest

from scaler.protocol.call import ARG_INLINE, ARG_OBJECT, ARG_PACKED_TEMP, ARG_TEMP, graph_result_id, packed_call
from scaler.protocol.codec import encode
from scaler.protocol.messages import (FLAG_KEEP_RESULT, FLAG_NEEDS_OBJECTS, STATUS_CANCELLED, STATUS_FAILED,
                                      STATUS_MISSING_OBJECT, STATUS_OK, STATUS_OK_OBJECT, STATUS_PROCESSOR_DIED,
                                      STATUS_TIMED_OUT, Call,
                                      ProcessorCancel, ProcessorDropObjects, ProcessorTask, TaskResult,
                                      WorkerTask)
from scaler.scheduler.pipeline import HEAD_STALL_SECONDS, PIPELINE_DEPTH, PipelineEffects, TaskPipeline, pipeline_depth

CLIENT = b"C" * 16
FUNC = b"F" * 32


class FakeEffects(PipelineEffects):
    def __init__(self):
        self.fetched = []
        self.processor = []
        self.results = []
        self.restarts = []

    def fetch_object(self, object_id):
        self.fetched.append(object_id)

    def to_processor(self, msg):
        self.processor.append(msg)

    def send_result(self, result):
        self.results.append(result)

    def restart_processor(self, why):
        self.restarts.append(why)

    # --- helpers for the tests ---
    def sent_tasks(self):
        return [m.task_id for m in self.processor if type(m) is ProcessorTask]

    def take_results(self):
        results, self.results = self.results, []
        return [(r.task_id, r.status) for r in results]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def oid(name):
    return name.encode().ljust(32, b"_")


def task(name, flags=0, call=None, client=CLIENT, func=FUNC, priority=0):
    return WorkerTask(name.encode(), client, flags, func, packed_call(b"", b"args") if call is None else call,
                      priority)


def call_of(kinds_values, serializer_id=b""):
    kinds = bytes(kind for kind, _ in kinds_values)
    return encode(Call(serializer_id, kinds, [b""] * len(kinds_values), [v for _, v in kinds_values]))[8:]


def make(ready=True, fast=True):
    effects, clock = FakeEffects(), Clock()
    pipeline = TaskPipeline(effects, clock)
    if ready:
        pipeline.processor_ready()
    if fast:  # pretend the function is cached already and tasks are short
        make_fast(pipeline, effects, clock)
    return pipeline, effects, clock


def make_fast(pipeline, effects, clock):
    """Warm the pipeline up: its function is held by the processor and tasks take 0 s."""
    pipeline.add(task("warm"), 0)
    pipeline.object_arrived(FUNC, True)
    for _ in range(30):
        pipeline.processor_result(TaskResult(b"warm", STATUS_OK, b"", ""))
        if pipeline.depth == PIPELINE_DEPTH:
            break
        pipeline.add(task("warm"), 0)
    assert pipeline.depth == PIPELINE_DEPTH and not pipeline.inflight()
    effects.__init__()


def ok(name, payload=b"r"):
    return TaskResult(name.encode(), STATUS_OK, payload, "")


# --- depth and the head-stall rule ---

def test_pipeline_depth_follows_task_duration():
    assert pipeline_depth(0.0001) == PIPELINE_DEPTH
    assert pipeline_depth(0.0002) == pipeline_depth(0.001) == 16 < PIPELINE_DEPTH
    assert pipeline_depth(0.005) == 4
    assert pipeline_depth(0.5) == 1


def test_a_new_pipeline_assumes_slow_tasks_and_sends_one_at_a_time():
    pipeline, effects, clock = make(fast=False)
    pipeline.add(task("a"), 0)
    assert effects.fetched == [FUNC]  # the processor does not hold the function yet
    pipeline.object_arrived(FUNC, True)
    pipeline.add(task("b"), 0)
    assert effects.sent_tasks() == [b"a"]
    assert pipeline.queued() == [b"b"]
    clock.now += 0.5
    pipeline.processor_result(ok("a"))
    assert effects.sent_tasks() == [b"a", b"b"]
    assert effects.take_results() == [(b"a", STATUS_OK)]


def test_short_tasks_are_sent_ahead_up_to_the_depth():
    pipeline, effects, clock = make()
    for i in range(PIPELINE_DEPTH + 3):
        pipeline.add(task("t%d" % i), 0)
    assert len(effects.sent_tasks()) == PIPELINE_DEPTH
    assert len(pipeline.queued()) == 3
    assert len(pipeline) == PIPELINE_DEPTH + 3
    pipeline.processor_result(ok("t0"))  # no time passed: still short
    assert len(effects.sent_tasks()) == PIPELINE_DEPTH + 1


def test_nothing_joins_behind_a_running_task_that_stalls():
    pipeline, effects, clock = make()
    pipeline.add(task("long"), 0)
    pipeline.add(task("b"), 0)  # the head has just started: b may follow
    assert effects.sent_tasks() == [b"long", b"b"]
    clock.now += HEAD_STALL_SECONDS * 2
    pipeline.add(task("c"), 0)
    pipeline.add(task("d"), 0)
    assert effects.sent_tasks() == [b"long", b"b"], "queued behind a stalled head"
    assert pipeline.queued() == [b"c", b"d"]
    clock.now += 1.0
    pipeline.processor_result(ok("long"))  # slow: depth drops, b now runs
    assert pipeline.depth < PIPELINE_DEPTH
    assert effects.sent_tasks() == [b"long", b"b"], "b has only just started: still the depth of a slow pipeline"


def test_a_stalled_pipeline_still_sends_one_task_when_it_is_empty():
    pipeline, effects, clock = make()
    pipeline.add(task("a"), 0)
    clock.now += 1.0
    pipeline.processor_result(ok("a"))
    pipeline.add(task("b"), 0)
    assert effects.sent_tasks() == [b"a", b"b"]


def test_nothing_is_sent_before_the_processor_is_ready():
    pipeline, effects, clock = make(ready=False, fast=False)
    pipeline.add(task("a"), 0)
    assert effects.processor == [] and effects.fetched == []
    pipeline.processor_ready()
    assert effects.fetched == [FUNC]


# --- priority ---

def test_queued_tasks_are_taken_highest_priority_first_then_in_arrival_order():
    pipeline, effects, clock = make(fast=False)  # one at a time: the rest stays queued
    pipeline.add(task("first"), 0)
    pipeline.object_arrived(FUNC, True)
    for name, priority in [("low1", -1), ("mid1", 0), ("high1", 5), ("mid2", 0), ("high2", 5), ("low2", -1)]:
        pipeline.add(task(name), priority)
    assert pipeline.queued() == [b"high1", b"high2", b"mid1", b"mid2", b"low1", b"low2"]
    for name in ["first", "high1", "high2", "mid1", "mid2", "low1"]:
        clock.now += 1.0
        pipeline.processor_result(ok(name))
    assert effects.sent_tasks() == [b"first", b"high1", b"high2", b"mid1", b"mid2", b"low1", b"low2"]


def test_a_late_high_priority_task_overtakes_queued_ones_but_not_sent_ones():
    pipeline, effects, clock = make()
    pipeline.add(task("running"), 0)
    clock.now += 1.0  # stalls: the rest stays queued
    pipeline.add(task("a"), 0)
    pipeline.add(task("b"), 0)
    pipeline.add(task("urgent"), 3)
    assert pipeline.queued() == [b"urgent", b"a", b"b"]
    assert pipeline.inflight() == [b"running"]


def test_tasks_given_back_by_a_dead_processor_keep_their_priority_and_order():
    pipeline, effects, clock = make()
    pipeline.add(task("p1"), 1)
    pipeline.add(task("p0a"), 0)
    clock.now += 1.0
    pipeline.add(task("p0b"), 0)
    pipeline.add(task("p2"), 2)
    assert pipeline.inflight() == [b"p1", b"p0a"] and pipeline.queued() == [b"p2", b"p0b"]
    pipeline.processor_died("killed by signal SIGKILL")
    assert effects.take_results() == [(b"p1", STATUS_PROCESSOR_DIED)]
    assert pipeline.queued() == [b"p2", b"p0a", b"p0b"]


# --- temporary inputs shared by several tasks (graph nodes reading one result) ---

def test_a_shared_temporary_input_is_dropped_only_after_its_last_reader():
    pipeline, effects, clock = make()
    shared, other = oid("shared"), oid("other")
    pipeline.add(task("first", FLAG_NEEDS_OBJECTS, call_of([(ARG_TEMP, shared)])), 0)
    pipeline.object_arrived(shared, True)
    pipeline.add(task("second", FLAG_NEEDS_OBJECTS, call_of([(ARG_TEMP, shared), (ARG_TEMP, other)])), 0)
    assert pipeline.inflight() == [b"first"] and pipeline.preparing() == [b"second"]
    assert effects.fetched == [shared, other]  # the shared one is held already: fetched once
    pipeline.processor_result(ok("first"))
    assert not [m for m in effects.processor if type(m) is ProcessorDropObjects]  # "second" still needs it
    pipeline.object_arrived(other, True)
    assert pipeline.inflight() == [b"second"]
    pipeline.processor_result(ok("second"))
    drops = [m.object_ids for m in effects.processor if type(m) is ProcessorDropObjects]
    assert drops == [[shared, other]]
    assert pipeline.processor_holds() == {FUNC: CLIENT}


# --- task timeout ---

def test_a_task_running_past_the_limit_fails_and_the_processor_is_replaced():
    pipeline, effects, clock = make()
    pipeline.add(task("long"), 0)
    pipeline.add(task("next"), 0)
    assert pipeline.inflight() == [b"long", b"next"]
    clock.now += 5.0
    assert pipeline.check_timeout(0) is None  # 0: no limit
    assert pipeline.check_timeout(10.0) is None
    clock.now += 6.0
    assert pipeline.check_timeout(10.0) == b"long"
    (result,) = effects.results
    assert (result.task_id, result.status) == (b"long", STATUS_TIMED_OUT) and "10s" in result.detail
    assert effects.restarts and pipeline.queued() == [b"next"]  # the next task runs on the new processor
    pipeline.processor_ready()
    pipeline.object_arrived(FUNC, True)
    assert pipeline.inflight() == [b"next"]


def test_the_limit_counts_from_when_a_task_starts_not_when_it_was_sent():
    pipeline, effects, clock = make()
    pipeline.add(task("first"), 0)
    pipeline.add(task("second"), 0)  # sent at once, behind "first"
    clock.now += 8.0
    pipeline.processor_result(ok("first"))  # "second" starts now
    clock.now += 8.0
    assert pipeline.check_timeout(10.0) is None
    clock.now += 3.0
    assert pipeline.check_timeout(10.0) == b"second"


# --- nested tasks: a parent blocked on its children ---

def test_a_blocked_parent_lets_outranking_tasks_past_the_head_stall_rule():
    pipeline, effects, clock = make()
    pipeline.add(task("parent"), 0)
    clock.now += 1.0  # the parent runs long: nothing joins behind it...
    pipeline.add(task("other"), 0)
    pipeline.add(task("child1"), 1)
    assert pipeline.inflight() == [b"parent"]
    pipeline.processor_waiting(b"parent", True)  # ...until it blocks on its children
    pipeline.add(task("child2"), 1)
    assert pipeline.inflight() == [b"parent", b"child1", b"child2"]
    assert pipeline.queued() == [b"other"]  # an equal-priority task does not run on top of it
    sent = [m for m in effects.processor if type(m) is ProcessorTask]
    assert [(m.task_id, m.priority) for m in sent] == [(b"parent", 0), (b"child1", 1), (b"child2", 1)]
    pipeline.processor_result(ok("child2"))  # nested tasks finish before their parent, any order
    pipeline.processor_result(ok("child1"))
    assert effects.take_results() == [(b"child2", STATUS_OK), (b"child1", STATUS_OK)]
    assert pipeline.queued() == [b"other"]  # still blocked: results of children let nothing else in
    pipeline.processor_waiting(b"parent", False)
    clock.now += 1.0
    pipeline.add(task("child3"), 1)  # the parent runs again, long: the head-stall rule is back
    assert pipeline.queued()[0] == b"child3" and pipeline.inflight()[0] == b"parent"


def test_nested_waits_need_a_task_above_the_innermost_blocked_one():
    pipeline, effects, clock = make()
    pipeline.add(task("parent"), 0)
    clock.now += 1.0
    pipeline.processor_waiting(b"parent", True)
    pipeline.add(task("child"), 1)
    pipeline.processor_waiting(b"child", True)  # the child runs on top of its parent, and blocks too
    pipeline.add(task("sibling"), 1)  # another child of the parent: not above the blocked child
    assert pipeline.queued() == [b"sibling"]
    pipeline.add(task("grandchild"), 2)
    assert pipeline.inflight() == [b"parent", b"child", b"grandchild"]
    pipeline.processor_result(ok("grandchild"))
    pipeline.processor_waiting(b"child", False)
    pipeline.processor_result(ok("child"))  # the parent is the innermost blocked one again
    assert pipeline.inflight() == [b"parent", b"sibling"]


def test_a_dead_processor_fails_every_task_it_had_started_and_requeues_the_rest():
    pipeline, effects, clock = make()
    pipeline.add(task("parent"), 0)
    clock.now += 1.0
    pipeline.add(task("later"), 0)
    pipeline.processor_waiting(b"parent", True)
    pipeline.add(task("child"), 1)
    pipeline.processor_waiting(b"child", True)
    pipeline.add(task("grandchild"), 2)
    pipeline.processor_died("killed by signal SIGKILL")
    assert sorted(effects.take_results()) == [(b"child", STATUS_PROCESSOR_DIED), (b"parent", STATUS_PROCESSOR_DIED)]
    assert pipeline.queued() == [b"grandchild", b"later"]  # not known to have started: tried again
    pipeline.processor_ready()
    assert pipeline.preparing() == [b"grandchild", b"later"]  # the new processor needs the function first


def test_waiting_reports_for_unknown_or_repeated_tasks_are_harmless():
    pipeline, effects, clock = make()
    pipeline.processor_waiting(b"nobody", True)
    pipeline.add(task("parent"), 0)
    clock.now += 1.0
    pipeline.processor_waiting(b"parent", True)
    pipeline.processor_waiting(b"parent", True)
    pipeline.processor_waiting(b"parent", False)
    pipeline.add(task("child"), 1)
    assert pipeline.queued() == [b"child"]


def test_cancel_removes_a_queued_task_of_any_priority():
    pipeline, effects, clock = make()
    pipeline.add(task("running"), 0)
    clock.now += 1.0
    pipeline.add(task("a"), 7)
    pipeline.add(task("b"), -7)
    pipeline.cancel(b"a", force=False)
    pipeline.cancel(b"b", force=False)
    assert pipeline.queued() == []
    assert effects.take_results() == [(b"a", STATUS_CANCELLED), (b"b", STATUS_CANCELLED)]
    assert len(pipeline) == 1


# --- objects ---

def test_objects_are_fetched_once_per_processor_and_the_task_sent_once_they_are_there():
    pipeline, effects, clock = make(fast=False)
    ref = oid("ref")
    call = call_of([(ARG_OBJECT, ref), (ARG_INLINE, b"x")])
    pipeline.add(task("a", FLAG_NEEDS_OBJECTS, call), 0)
    assert effects.fetched == [FUNC, ref]
    pipeline.object_arrived(ref, True)
    assert effects.sent_tasks() == []
    pipeline.object_arrived(FUNC, True)
    assert effects.processor == [ProcessorTask(b"a", FLAG_NEEDS_OBJECTS, FUNC, call, 0, CLIENT)]
    pipeline.processor_result(ok("a"))
    pipeline.add(task("b", FLAG_NEEDS_OBJECTS, call), 0)
    assert effects.fetched == [FUNC, ref], "cached on the processor"
    assert effects.sent_tasks() == [b"a", b"b"]
    assert pipeline.processor_holds() == {FUNC: CLIENT, ref: CLIENT}


def test_the_serializer_of_a_call_is_fetched_too():
    pipeline, effects, clock = make()
    serializer = oid("serializer")
    pipeline.add(task("a", FLAG_NEEDS_OBJECTS, call_of([(ARG_INLINE, b"x")], serializer)), 0)
    assert effects.fetched == [serializer]


def test_a_task_waiting_for_objects_holds_back_the_tasks_after_it():
    pipeline, effects, clock = make()
    ref = oid("ref")
    pipeline.add(task("a", FLAG_NEEDS_OBJECTS, call_of([(ARG_OBJECT, ref)])), 0)
    pipeline.add(task("b"), 0)
    assert pipeline.preparing() == [b"a", b"b"] and pipeline.queued() == []
    assert effects.sent_tasks() == []
    pipeline.object_arrived(oid("unrelated"), True)  # ignored
    pipeline.object_arrived(ref, True)
    assert effects.sent_tasks() == [b"a", b"b"]


def test_fetches_for_several_tasks_overlap_but_the_tasks_go_in_order():
    """Graph nodes each read other nodes' results: their fetches run together (the round
    trip through the agent is paid once, not once per task), and no task overtakes one
    taken before it."""
    pipeline, effects, clock = make()
    ra, rb, shared = oid("ra"), oid("rb"), oid("shared")
    pipeline.add(task("a", FLAG_NEEDS_OBJECTS, call_of([(ARG_TEMP, ra), (ARG_TEMP, shared)])), 0)
    pipeline.add(task("b", FLAG_NEEDS_OBJECTS, call_of([(ARG_TEMP, rb), (ARG_TEMP, shared)])), 0)
    pipeline.add(task("c"), 0)
    assert effects.fetched == [ra, shared, rb], "all at once, a shared one once"
    assert pipeline.preparing() == [b"a", b"b", b"c"]
    pipeline.object_arrived(rb, True)
    pipeline.object_arrived(shared, True)
    assert effects.sent_tasks() == [], "b is ready, but a was taken first"
    pipeline.object_arrived(ra, True)
    assert effects.sent_tasks() == [b"a", b"b", b"c"] and pipeline.preparing() == []


def test_a_fetch_for_a_dead_processor_does_not_count_for_the_next_one():
    """The agent passes an object to whichever processor it has when the object comes: one
    asked for before the processor died may have gone to the dead one."""
    pipeline, effects, clock = make()
    ref = oid("ref")
    pipeline.add(task("a", FLAG_NEEDS_OBJECTS, call_of([(ARG_OBJECT, ref)])), 0)
    pipeline.processor_died("killed")
    pipeline.processor_ready()
    assert effects.fetched == [ref, FUNC, ref], "fetched again for the new processor"
    pipeline.object_arrived(FUNC, True)
    pipeline.object_arrived(ref, True)  # the first fetch's: not for this processor
    assert effects.sent_tasks() == []
    pipeline.object_arrived(ref, True)
    assert effects.sent_tasks() == [b"a"]


def test_temporary_objects_are_forgotten_after_their_task():
    pipeline, effects, clock = make()
    big, packed = oid("big"), oid("packed")
    pipeline.add(task("a", FLAG_NEEDS_OBJECTS, call_of([(ARG_TEMP, big)])), 0)
    pipeline.object_arrived(big, True)
    pipeline.add(task("b", FLAG_NEEDS_OBJECTS, call_of([(ARG_PACKED_TEMP, packed)])), 0)
    pipeline.object_arrived(packed, True)
    assert set(pipeline.processor_holds()) == {FUNC, big, packed}
    pipeline.processor_result(ok("a"))
    pipeline.processor_result(ok("b"))
    assert set(pipeline.processor_holds()) == {FUNC}


def test_a_missing_object_fails_its_task_only():
    pipeline, effects, clock = make()
    ref = oid("gone")
    pipeline.add(task("a", FLAG_NEEDS_OBJECTS, call_of([(ARG_OBJECT, ref)])), 0)
    pipeline.add(task("b"), 0)
    pipeline.object_arrived(ref, False)
    assert effects.take_results() == [(b"a", STATUS_MISSING_OBJECT)]
    assert effects.sent_tasks() == [b"b"]


def test_a_malformed_call_fails_its_task_only():
    pipeline, effects, clock = make()
    pipeline.add(task("bad", FLAG_NEEDS_OBJECTS, b"\xff" * 20), 0)
    pipeline.add(task("wrong_type", FLAG_NEEDS_OBJECTS, encode(TaskResult(b"", 0, b"", ""))[8:]), 0)
    pipeline.add(task("good"), 0)
    assert effects.take_results() == [(b"bad", STATUS_MISSING_OBJECT), (b"wrong_type", STATUS_MISSING_OBJECT)]
    assert effects.sent_tasks() == [b"good"]


def test_a_client_leaving_drops_its_objects_from_the_processor():
    pipeline, effects, clock = make()
    other, ref = b"O" * 16, oid("ref")
    pipeline.add(task("a", FLAG_NEEDS_OBJECTS, call_of([(ARG_OBJECT, ref)]), client=other), 0)
    pipeline.object_arrived(ref, True)
    pipeline.drop_owner(other)
    assert effects.processor[-1] == ProcessorDropObjects([ref])
    assert pipeline.processor_holds() == {FUNC: CLIENT}
    pipeline.drop_owner(b"nobody")
    assert effects.processor[-1] == ProcessorDropObjects([ref]), "nothing to drop: no message"


# --- results ---

def test_a_small_result_passes_through_and_a_stored_one_waits_for_its_put():
    """Results over 64 KiB and graph nodes' are handed to the agent to store; the processor
    answers status 1 with the id at once, and the result is announced once the agent says
    the put is done."""
    pipeline, effects, clock = make()
    pipeline.add(task("small"), 0)
    pipeline.add(task("stored", FLAG_KEEP_RESULT), 0)
    stored = TaskResult(b"stored", STATUS_OK_OBJECT, graph_result_id(b"stored"), "")
    pipeline.processor_result(ok("small", b"s"))
    pipeline.processor_result(stored)
    assert effects.results == [ok("small", b"s")] and pipeline.storing() == [b"stored"]
    assert pipeline.inflight() == [], "the processor is free for the next task meanwhile"
    pipeline.object_stored(graph_result_id(b"stored"), "")
    assert effects.results == [ok("small", b"s"), stored] and pipeline.storing() == []


def test_a_put_done_before_its_result_came_is_remembered():
    pipeline, effects, clock = make()
    pipeline.add(task("a"), 0)
    object_id = oid("result")
    pipeline.object_stored(object_id, "")  # the agent's note overtook the processor's result
    assert effects.results == []
    pipeline.processor_result(TaskResult(b"a", STATUS_OK_OBJECT, object_id, ""))
    assert effects.results == [TaskResult(b"a", STATUS_OK_OBJECT, object_id, "")]


def test_a_refused_put_fails_the_task_with_the_reason_whichever_came_first():
    pipeline, effects, clock = make()
    pipeline.add(task("a"), 0)
    pipeline.add(task("b"), 0)
    pipeline.processor_result(TaskResult(b"a", STATUS_OK_OBJECT, oid("ra"), ""))
    pipeline.object_stored(oid("ra"), "object storage is full")
    pipeline.object_stored(oid("rb"), "object storage connection lost")
    pipeline.processor_result(TaskResult(b"b", STATUS_OK_OBJECT, oid("rb"), ""))
    assert [(r.task_id, r.status) for r in effects.results] == [(b"a", STATUS_MISSING_OBJECT),
                                                                (b"b", STATUS_MISSING_OBJECT)]
    assert "object storage is full" in effects.results[0].detail


def test_a_stored_result_survives_its_processor_s_death():
    pipeline, effects, clock = make()
    pipeline.add(task("a"), 0)
    pipeline.add(task("b"), 0)
    pipeline.processor_result(TaskResult(b"a", STATUS_OK_OBJECT, oid("ra"), ""))
    pipeline.processor_died("killed by signal SIGKILL")  # b was running
    pipeline.object_stored(oid("ra"), "")
    assert [(r.task_id, r.status) for r in effects.results] == [(b"b", STATUS_PROCESSOR_DIED), (b"a", STATUS_OK_OBJECT)]


def test_failures_pass_through_unchanged():
    pipeline, effects, clock = make()
    pipeline.add(task("a"), 0)
    failure = TaskResult(b"a", STATUS_FAILED, b"exc" * 100000, "Traceback")
    pipeline.processor_result(failure)
    assert effects.results == [failure]


def test_keep_result_of_a_failed_task_is_the_failure():
    pipeline, effects, clock = make()
    pipeline.add(task("k", FLAG_KEEP_RESULT), 0)
    failure = TaskResult(b"k", STATUS_FAILED, b"exc", "Traceback")
    pipeline.processor_result(failure)
    assert effects.results == [failure]


# --- cancellation ---

def test_cancel_of_a_queued_task_answers_at_once_forced_or_not():
    pipeline, effects, clock = make()
    pipeline.add(task("running"), 0)
    clock.now += 1.0
    pipeline.add(task("a"), 0)
    pipeline.add(task("b"), 0)
    pipeline.cancel(b"a", force=False)
    pipeline.cancel(b"b", force=True)
    assert effects.take_results() == [(b"a", STATUS_CANCELLED), (b"b", STATUS_CANCELLED)]
    assert pipeline.queued() == [] and effects.restarts == []


def test_cancel_of_a_task_waiting_for_objects_lets_the_next_one_go():
    pipeline, effects, clock = make()
    ref = oid("ref")
    pipeline.add(task("a", FLAG_NEEDS_OBJECTS, call_of([(ARG_OBJECT, ref)])), 0)
    pipeline.add(task("b"), 0)
    pipeline.cancel(b"a", force=False)
    assert effects.take_results() == [(b"a", STATUS_CANCELLED)]
    assert effects.sent_tasks() == [b"b"]
    pipeline.object_arrived(ref, True)  # too late: ignored
    assert effects.sent_tasks() == [b"b"]


def test_a_balancing_cancel_asks_the_processor_back_for_a_task_it_has_not_started():
    """Sent ahead is not started: a balancing cancel asks the processor to skip it, and the
    state learns it was given back only from the processor's answer (so it runs once)."""
    pipeline, effects, clock = make()
    for name in ("a", "b", "c"):
        pipeline.add(task(name), 0)
    pipeline.cancel(b"a", force=False)  # the running one: stays
    pipeline.cancel(b"c", force=False)
    pipeline.cancel(b"c", force=False)  # asked once
    assert effects.processor.count(ProcessorCancel(b"c")) == 1 and ProcessorCancel(b"a") not in effects.processor
    assert effects.results == [] and pipeline.inflight() == [b"a", b"b", b"c"]
    pipeline.processor_results([ok("a"), ok("b"), TaskResult(b"c", STATUS_CANCELLED, b"", "cancelled")])
    assert effects.take_results() == [(b"a", STATUS_OK), (b"b", STATUS_OK), (b"c", STATUS_CANCELLED)]


def test_a_task_asked_back_too_late_is_answered_with_its_result():
    pipeline, effects, clock = make()
    pipeline.add(task("a"), 0)
    pipeline.add(task("b"), 0)
    pipeline.cancel(b"b", force=False)
    pipeline.processor_results([ok("a"), ok("b")])  # the processor had started it: it ran, once
    assert effects.take_results() == [(b"a", STATUS_OK), (b"b", STATUS_OK)]


def test_a_forced_cancel_after_a_balancing_one_is_answered_once():
    pipeline, effects, clock = make()
    pipeline.add(task("a"), 0)
    pipeline.add(task("b"), 0)
    pipeline.cancel(b"b", force=False)
    pipeline.cancel(b"b", force=True)
    assert effects.take_results() == [(b"b", STATUS_CANCELLED)]
    pipeline.processor_results([ok("a"), TaskResult(b"b", STATUS_CANCELLED, b"", "cancelled")])
    assert effects.take_results() == [(b"a", STATUS_OK)]


def test_a_task_asked_back_when_the_processor_dies_is_given_back():
    """The processor died before answering: the task had not started (it was not the running
    one), so it is given back as asked, not kept here where the state thinks it is moving."""
    pipeline, effects, clock = make()
    for name in ("a", "b", "c"):
        pipeline.add(task(name), 0)
    pipeline.cancel(b"b", force=False)
    pipeline.processor_died("killed")
    assert effects.take_results() == [(b"a", STATUS_PROCESSOR_DIED), (b"b", STATUS_CANCELLED)]
    assert pipeline.queued() == [b"c"]


def test_tasks_skipped_when_asked_back_do_not_count_as_quick_tasks():
    """A skip is answered at once: it must not pull the moving average of the task time
    towards zero (and the depth back up) right after slow tasks were asked back."""
    pipeline, effects, clock = make(fast=False)
    pipeline.add(task("a"), 0)
    pipeline.object_arrived(FUNC, True)
    clock.now += 1.0
    pipeline.processor_result(ok("a"))  # slow: depth 1
    for name in ("b", "c", "d", "e"):
        pipeline.add(task(name), 0)
    assert pipeline.inflight() == [b"b"]
    clock.now += 1.0
    pipeline.processor_result(ok("b"))
    assert pipeline.inflight() == [b"c"]
    pipeline.depth = 4  # as if c, d, e had gone ahead together: ask d and e back
    pipeline._pump()
    assert pipeline.inflight() == [b"c", b"d", b"e"]
    pipeline.cancel(b"d", force=False)
    pipeline.cancel(b"e", force=False)
    before = pipeline.task_seconds
    clock.now += 1.0  # c took as long as the tasks before it
    pipeline.processor_results([ok("c"), TaskResult(b"d", STATUS_CANCELLED, b"", ""),
                                TaskResult(b"e", STATUS_CANCELLED, b"", "")])
    assert pipeline.task_seconds >= before, "the skips were counted as instant tasks"


def test_tasks_that_need_objects_go_ahead_16_deep_at_most():
    """64 ahead only for tasks with nothing to fetch: a burst of tasks with large arguments
    after a run of no-op tasks must not have 64 of them fetched into the processor."""
    pipeline, effects, clock = make()
    for i in range(40):
        pipeline.add(task("t%d" % i, FLAG_NEEDS_OBJECTS, call_of([(ARG_TEMP, oid("big%d" % i))])), 0)
    assert len(effects.fetched) == 16 and len(pipeline.queued()) == 24


def test_a_forced_cancel_of_a_sent_task_tells_the_processor_to_skip_it():
    pipeline, effects, clock = make()
    pipeline.add(task("a"), 0)
    pipeline.add(task("b"), 0)
    pipeline.cancel(b"b", force=True)
    assert effects.take_results() == [(b"b", STATUS_CANCELLED)]
    assert effects.processor[-1] == ProcessorCancel(b"b")
    pipeline.cancel(b"b", force=True)  # twice: answered once
    assert effects.results == []
    pipeline.processor_result(ok("a"))
    pipeline.processor_result(TaskResult(b"b", STATUS_CANCELLED, b"", "cancelled"))
    assert effects.take_results() == [(b"a", STATUS_OK)], "the skip is not answered twice"
    assert pipeline.inflight() == []


def test_a_skipped_task_drops_its_temporary_objects_from_the_processor():
    pipeline, effects, clock = make()
    big = oid("big")
    pipeline.add(task("a"), 0)
    pipeline.add(task("b", FLAG_NEEDS_OBJECTS, call_of([(ARG_TEMP, big)])), 0)
    pipeline.object_arrived(big, True)
    pipeline.cancel(b"b", force=True)
    pipeline.processor_result(ok("a"))
    pipeline.processor_result(TaskResult(b"b", STATUS_CANCELLED, b"", "cancelled"))
    assert effects.processor[-1] == ProcessorDropObjects([big])


def test_a_forced_cancel_of_the_running_task_replaces_the_processor_and_requeues_the_rest():
    pipeline, effects, clock = make()
    for name in ("a", "b", "c"):
        pipeline.add(task(name), 0)
    clock.now += 1.0
    pipeline.add(task("d"), 0)
    pipeline.cancel(b"a", force=True)
    assert effects.take_results() == [(b"a", STATUS_CANCELLED)]
    assert effects.restarts == ["task cancelled while running"]
    assert pipeline.queued() == [b"b", b"c", b"d"] and pipeline.inflight() == []
    assert not pipeline.processor_is_ready and pipeline.processor_holds() == {}
    sent_before = len(effects.sent_tasks())
    pipeline.add(task("e"), 0)
    assert len(effects.sent_tasks()) == sent_before, "no new processor yet"
    pipeline.processor_ready()
    assert effects.fetched == [FUNC], "the new processor needs the function again"
    pipeline.object_arrived(FUNC, True)
    assert effects.sent_tasks()[sent_before:][0] == b"b"


def test_cancel_of_an_unknown_task_does_nothing():
    pipeline, effects, clock = make()
    pipeline.cancel(b"nope", force=True)
    assert effects.results == [] and effects.restarts == []


# --- the processor and the scheduler going away ---

def test_a_dead_processor_fails_its_running_task_and_requeues_the_others():
    pipeline, effects, clock = make()
    for name in ("a", "b", "c"):
        pipeline.add(task(name), 0)
    pipeline.processor_died("exit code 1")
    (result,) = effects.results
    assert result.task_id == b"a" and result.status == STATUS_PROCESSOR_DIED and "exit code 1" in result.detail
    assert pipeline.queued() == [b"b", b"c"]
    assert effects.restarts == [], "the agent restarts a dead processor itself"
    pipeline.processor_ready()
    pipeline.object_arrived(FUNC, True)
    assert effects.sent_tasks()[-2:] == [b"b", b"c"]


def test_a_dead_processor_does_not_answer_a_cancelled_running_task_twice():
    pipeline, effects, clock = make()
    pipeline.add(task("a"), 0)
    pipeline.add(task("b"), 0)
    pipeline.cancel(b"b", force=True)
    effects.take_results()
    pipeline.processor_died("exit code 1")  # b was to be skipped: it is not requeued
    assert effects.take_results() == [(b"a", STATUS_PROCESSOR_DIED)]
    assert pipeline.queued() == []


def test_a_dead_processor_requeues_the_task_waiting_for_objects_after_the_sent_ones():
    pipeline, effects, clock = make()
    ref = oid("ref")
    pipeline.add(task("a"), 0)
    pipeline.add(task("b"), 0)
    pipeline.add(task("c", FLAG_NEEDS_OBJECTS, call_of([(ARG_OBJECT, ref)])), 0)
    pipeline.add(task("d"), 0)
    assert pipeline.preparing() == [b"c", b"d"]
    pipeline.processor_died("killed")
    assert pipeline.queued() == [b"b", b"c", b"d"] and pipeline.preparing() == []
    pipeline.object_arrived(ref, True)  # for the old attempt: ignored
    assert not pipeline.processor_holds()


def test_results_that_come_together_are_answered_in_order_and_the_pipe_refilled_once():
    pipeline, effects, clock = make()
    for i in range(PIPELINE_DEPTH + 8):
        pipeline.add(task("t%d" % i), 0)
    assert len(effects.sent_tasks()) == PIPELINE_DEPTH
    pipeline.cancel(b"t2", force=True)  # not started: skipped by the processor, answered here
    assert effects.take_results() == [(b"t2", STATUS_CANCELLED)]
    pipeline.processor_results([ok("t0"), ok("t1"), TaskResult(b"t2", STATUS_CANCELLED, b"", ""), ok("ghost"),
                                ok("t3")])
    assert effects.take_results() == [(b"t0", STATUS_OK), (b"t1", STATUS_OK), (b"t3", STATUS_OK)]
    assert len(effects.sent_tasks()) == PIPELINE_DEPTH + 4  # the four ended are replaced
    assert pipeline.inflight()[0] == b"t4" and len(pipeline.inflight()) == PIPELINE_DEPTH


def test_results_that_come_together_share_the_time_since_the_last_one():
    """Sixteen results read at once after 80 ms are sixteen 5 ms tasks (depth 4), not one
    80 ms task and fifteen instant ones."""
    pipeline, effects, clock = make()
    for i in range(16):
        pipeline.add(task("t%d" % i), 0)
    clock.now += 0.080
    pipeline.processor_results([ok("t%d" % i) for i in range(16)])
    assert 0.004 < pipeline.task_seconds < 0.005
    assert pipeline.depth == 4
    single, single_effects, single_clock = make()
    single.add(task("a"), 0)
    single_clock.now += 0.080
    single.processor_results([ok("a")])
    assert single.depth == 1


def test_a_result_for_a_task_not_in_flight_is_ignored():
    pipeline, effects, clock = make()
    pipeline.processor_result(ok("ghost"))
    pipeline.add(task("a"), 0)
    pipeline.processor_result(ok("ghost"))
    assert effects.results == [] and pipeline.inflight() == [b"a"]


@pytest.mark.parametrize("seed", range(20))
def test_random_event_sequences_never_lose_or_duplicate_a_task(seed):
    """Every task added is answered exactly once, or still held, whatever happens."""
    import random
    rng = random.Random(seed)
    pipeline, effects, clock = make()
    refs = [oid("ref%d" % i) for i in range(3)]
    added = []
    pending_puts = []
    for step in range(300):
        event = rng.random()
        if event < 0.3:
            name = "t%d" % step
            kinds = [(rng.choice([ARG_OBJECT, ARG_TEMP]), rng.choice(refs)) for _ in range(rng.randrange(2))]
            flags = FLAG_NEEDS_OBJECTS if kinds else 0
            flags |= rng.choice([0, FLAG_KEEP_RESULT])
            pipeline.add(task(name, flags, call_of(kinds) if kinds else None), rng.randrange(-1, 2))
            added.append(name.encode())
        elif event < 0.5 and pipeline.inflight():
            clock.now += rng.choice([0.0, 0.01, 1.0])
            head = pipeline.inflight()[0]
            if rng.random() < 0.3:  # stored by the agent: announced once it says so
                pending_puts.append(b"put-" + head)
                pipeline.processor_result(TaskResult(head, STATUS_OK_OBJECT, b"put-" + head, ""))
            elif rng.random() < 0.3:  # several read at once (the first may have been skipped)
                inflight = pipeline.inflight()
                pipeline.processor_results([TaskResult(t, STATUS_OK, b"r", "") for t in inflight[:rng.randrange(1, 5)]])
            else:
                pipeline.processor_result(TaskResult(head, STATUS_OK, b"r", ""))
        elif event < 0.6 and pipeline.preparing():
            fetched, effects.fetched = effects.fetched, []
            for object_id in fetched:
                pipeline.object_arrived(object_id, rng.random() < 0.9)
        elif event < 0.7 and added:
            pipeline.cancel(rng.choice(added), force=rng.random() < 0.5)
        elif event < 0.75 and pipeline.processor_is_ready:
            pipeline.processor_died("random")
            pipeline.processor_ready()
        elif event < 0.8 and pending_puts:
            object_id = pending_puts.pop(rng.randrange(len(pending_puts)))
            pipeline.object_stored(object_id, rng.choice(["", "", "full"]))
        elif event < 0.85 and not pipeline.processor_is_ready:
            pipeline.processor_ready()
        if effects.restarts:  # the agent replaced the processor: the new one is ready
            effects.restarts.clear()
            pipeline.processor_ready()
    assert set(added) <= {r.task_id for r in effects.results} | set(pipeline.queued()) | set(
        pipeline.inflight()) | set(pipeline.preparing()) | set(pipeline.storing())
    # Let everything finish: then every task has been answered exactly once.
    if not pipeline.processor_is_ready:
        pipeline.processor_ready()
    for _ in range(10000):
        if effects.fetched:
            fetched, effects.fetched = effects.fetched, []
            for object_id in fetched:
                pipeline.object_arrived(object_id, True)
        elif pending_puts:
            pipeline.object_stored(pending_puts.pop(), "")
        elif pipeline.inflight():
            pipeline.processor_result(TaskResult(pipeline.inflight()[0], STATUS_OK, b"r", ""))
        else:
            break
    assert len(pipeline) == 0 and not pipeline.storing(), "stuck: %r %r %r" % (pipeline.queued(), pipeline.preparing(), pipeline.inflight())
    answered = [r.task_id for r in effects.results]
    assert sorted(answered) == sorted(added), "every task answered exactly once"
