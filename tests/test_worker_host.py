"""The scheduler's side of a worker (``scheduler/worker_host.py``), driven directly: fake
connections for the agent and the processors, no sockets."""

from scaler.protocol.call import packed_call
from scaler.protocol.messages import (STATUS_CANCELLED, STATUS_OK, STATUS_OK_OBJECT, STATUS_PROCESSOR_DIED,
                                      STATUS_TIMED_OUT,
                                      ObjectDeleteOwner, ProcessorTask, ProcessorWaiting, SchedulerShutdown,
                                      TaskOutput, TaskResult, WorkerDropObjects, WorkerFetchObject,
                                      WorkerRestartProcessor, WorkerTask, WorkerTaskCancel)
from scaler.scheduler.worker_host import EXIT_NOTE_SECONDS, WorkerHost

WORKER = b"W" * 16
CLIENT = b"C" * 16
FUNC = b"F" * 32
TOKEN = b"T" * 16


class FakeConn:
    def __init__(self):
        self.sent = []
        self.closed = None

    def send(self, msg):
        self.sent.append(msg)

    def close(self, reason="closed"):
        self.closed = reason

    def tasks(self):
        return [m.task_id for m in self.sent if type(m) is ProcessorTask]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Harness:
    def __init__(self, task_timeout=0.0):
        self.agent = FakeConn()
        self.results = []
        self.outputs = []
        self.soon = []
        self.timers = []
        self.clock = Clock()
        self.host = WorkerHost(WORKER, self.agent, lambda w, r: self.results.append(r),
                               lambda w, m: self.outputs.append(m), self.soon.append,
                               lambda delay, fn: self.timers.append((delay, fn)), task_timeout, TOKEN, self.clock)

    def run_soon(self):
        soon, self.soon[:] = list(self.soon), []
        for fn in soon:
            fn()

    def connect_processor(self, pid=10):
        conn = FakeConn()
        self.host.attach(conn, pid)
        return conn

    def add(self, name, priority=0):
        self.host.deliver(WorkerTask(name.encode(), CLIENT, 0, FUNC, packed_call(b"", b"args"), priority))

    def warm(self, conn):
        """The function reaches the processor (through the agent)."""
        self.add("warm")
        assert self.agent.sent[-1] == WorkerFetchObject(FUNC)
        self.host.object_ready(FUNC, True)
        self.host.processor_message(conn, TaskResult(b"warm", STATUS_OK, b"", ""))
        self.results.clear()


def running_a(pid=10, **kwargs):
    """A harness whose processor ``pid`` holds the function and runs task "a"."""
    h = Harness(**kwargs)
    processor = h.connect_processor(pid=pid)
    h.warm(processor)
    h.add("a")
    return h, processor


def test_tasks_go_to_the_processor_and_results_to_the_state():
    h = Harness()
    processor = h.connect_processor()
    h.warm(processor)
    h.add("a")
    assert processor.tasks()[-1] == b"a"
    assert processor.sent[-1].owner_id == CLIENT
    h.host.processor_message(processor, TaskResult(b"a", STATUS_OK, b"r", ""))
    assert [(r.task_id, r.status) for r in h.results] == [(b"a", STATUS_OK)]


def test_only_a_processor_with_the_worker_s_token_is_admitted():
    h = Harness()
    assert h.host.admits(TOKEN)
    assert not h.host.admits(b"X" * 16) and not h.host.admits(b"")
    assert not WorkerHost(WORKER, FakeConn(), None, None, None, None, 0.0, b"").admits(b""), "no token: nobody"


def test_nothing_is_sent_before_a_processor_connects():
    h = Harness()
    h.add("a")
    assert h.agent.sent == []
    processor = h.connect_processor()
    assert h.agent.sent == [WorkerFetchObject(FUNC)] and processor.tasks() == []
    h.host.object_ready(FUNC, True)
    assert processor.tasks() == [b"a"]


def test_answers_given_while_the_state_calls_in_wait_until_it_returns():
    """A cancel of a queued task is answered at once by the pipeline: the state must not be
    called back while it is itself in the middle of a call (balancing, dispatch)."""
    h = Harness()
    h.add("a")  # held: no processor yet
    h.host.deliver(WorkerTaskCancel(b"a", False))
    assert h.results == []
    h.run_soon()
    assert [(r.task_id, r.status) for r in h.results] == [(b"a", STATUS_CANCELLED)]


def test_drops_go_through_the_agent_behind_the_objects_and_other_messages_to_it():
    h = Harness()
    processor = h.connect_processor()
    h.warm(processor)
    h.host.deliver(ObjectDeleteOwner(CLIENT))
    assert h.agent.sent[-1] == WorkerDropObjects([FUNC])
    h.host.deliver(SchedulerShutdown("bye"))
    assert h.agent.sent[-1] == SchedulerShutdown("bye")


def test_a_dead_processor_s_running_task_fails_with_the_agent_s_exit_detail():
    h, processor = running_a()
    h.add("b")
    h.host.processor_closed(processor, "connection reset")
    assert h.results == [], "waits for the agent's note"
    h.host.processor_exited(10, "killed by signal SIGKILL")
    assert [(r.task_id, r.status, r.detail) for r in h.results] == [
        (b"a", STATUS_PROCESSOR_DIED, "processor died: killed by signal SIGKILL")]
    new = h.connect_processor(pid=11)
    assert h.agent.sent[-1] == WorkerFetchObject(FUNC), "a new processor holds nothing yet"
    h.host.object_ready(FUNC, True)
    assert new.tasks() == [b"b"], "the rest go to the next processor"
    h.timers[-1][1]()  # the fallback of the first: nothing more to do
    assert len(h.results) == 1


def test_an_exit_note_before_the_connection_s_end_waits_for_what_it_sent_last():
    """The agent's note and the processor's last results travel on different connections:
    results read after the note (but before the connection's end) still count."""
    h, processor = running_a()
    h.add("b")
    h.host.processor_exited(10, "exit code 7")
    assert h.results == [] and processor.closed is None
    h.host.processor_message(processor, TaskResult(b"a", STATUS_OK, b"", ""))  # sent just before it died
    h.host.processor_closed(processor, "closed")
    assert [(r.task_id, r.status, r.detail) for r in h.results] == [
        (b"a", STATUS_OK, ""), (b"b", STATUS_PROCESSOR_DIED, "processor died: exit code 7")]


def test_an_exit_note_whose_connection_never_ends_closes_it():
    h, processor = running_a()
    h.host.processor_exited(10, "exit code 7")
    (delay, end), = h.timers
    assert delay == EXIT_NOTE_SECONDS
    end()
    assert processor.closed and h.results[-1].status == STATUS_PROCESSOR_DIED and "exit code 7" in h.results[-1].detail
    h.host.processor_closed(processor, "closed")  # its end, seen later: nothing more
    assert len(h.results) == 1


def test_without_a_note_the_processor_counts_as_dead_after_a_while():
    h, processor = running_a()
    h.host.processor_closed(processor, "connection reset")
    (delay, fallback), = h.timers
    assert delay == EXIT_NOTE_SECONDS
    fallback()
    assert h.results[-1].status == STATUS_PROCESSOR_DIED and "connection reset" in h.results[-1].detail
    assert type(h.agent.sent[-1]) is WorkerRestartProcessor, "it may be alive without its connection: replaced"
    h.host.processor_exited(10, "exit code 1")  # too late: already answered
    assert len(h.results) == 1


def test_a_note_for_another_pid_changes_nothing():
    h, processor = running_a()
    h.host.processor_exited(99, "exit code 1")
    assert h.results == [] and processor.closed is None


def test_a_forced_cancel_of_the_running_task_has_the_agent_replace_the_processor():
    h, processor = running_a()
    h.add("b")
    h.host.deliver(WorkerTaskCancel(b"a", True))
    assert h.agent.sent[-1] == WorkerRestartProcessor("task cancelled while running")
    assert processor.closed, "the old processor's connection is closed at once"
    h.run_soon()
    assert [(r.task_id, r.status) for r in h.results] == [(b"a", STATUS_CANCELLED)]
    h.host.processor_message(processor, TaskResult(b"b", STATUS_OK, b"", ""))  # it had run b meanwhile: ignored
    h.host.processor_exited(10, "killed by signal SIGKILL")  # the agent's note of the kill: nothing more
    assert len(h.results) == 1
    new = h.connect_processor(pid=11)
    h.host.object_ready(FUNC, True)
    assert new.tasks() == [b"b"]


def test_the_task_timeout_is_kept_here():
    h = Harness(task_timeout=2.0)
    processor = h.connect_processor()
    h.warm(processor)
    h.add("slow")
    h.clock.now += 1.0
    assert h.host.check_timeout() is None
    h.clock.now += 1.5
    assert h.host.check_timeout() == b"slow"
    assert h.results[-1].status == STATUS_TIMED_OUT
    assert type(h.agent.sent[-1]) is WorkerRestartProcessor and processor.closed


def test_output_and_waiting_reports_come_from_the_processor():
    h = Harness()
    processor = h.connect_processor()
    h.warm(processor)
    h.add("parent")
    output = TaskOutput(b"parent", 1, b"hello")
    h.host.processor_message(processor, output)
    assert h.outputs == [output]
    h.host.processor_message(processor, ProcessorWaiting(b"parent", True))
    assert h.host.pipeline.blocked_count() == 1


def test_an_unexpected_message_closes_the_processor_s_connection():
    h = Harness()
    processor = h.connect_processor()
    h.host.processor_message(processor, WorkerTask(b"x", CLIENT, 0, FUNC, b"", 0))
    assert processor.closed


def test_answers_reach_the_state_only_after_the_pipeline_returned():
    """A result handed to the state may make it call back in at once (a graph node failing
    cancels its dependents on the same worker): the pipeline must have finished first."""
    h = Harness()
    processor = h.connect_processor()
    h.warm(processor)
    h.add("a")
    h.add("b")
    h.add("c")
    inside = []

    def on_result(worker_id, result):
        inside.append((result.task_id, h.host._inside))
        if result.task_id == b"a":
            h.host.deliver(WorkerTaskCancel(b"c", True))

    h.host._on_result = on_result
    h.host.processor_message(processor, TaskResult(b"a", STATUS_OK, b"", ""))
    h.run_soon()
    assert inside == [(b"a", 0), (b"c", 0)]
    assert h.host.pipeline.inflight() == [b"b"] and h.host.pipeline.queued() == []


def test_the_agent_s_put_outcome_announces_a_stored_result():
    h = Harness()
    processor = h.connect_processor()
    h.warm(processor)
    h.add("big")
    object_id = b"O" * 32
    h.host.processor_message(processor, TaskResult(b"big", STATUS_OK_OBJECT, object_id, ""))
    assert h.results == []
    h.host.object_stored(object_id, "")
    assert [(r.task_id, r.status) for r in h.results] == [(b"big", STATUS_OK_OBJECT)]


def test_a_worker_that_left_answers_nothing_more():
    h = Harness()
    processor = h.connect_processor()
    h.warm(processor)
    h.add("a")
    h.host.close()
    assert processor.closed
    h.host.processor_message(processor, TaskResult(b"a", STATUS_OK, b"", ""))
    h.host.processor_closed(processor, "closed")
    assert h.results == [] and h.timers == []


def test_results_read_together_go_through_the_pipeline_at_once_and_a_replaced_one_s_not_at_all():
    h = Harness()
    processor = h.connect_processor()
    h.warm(processor)
    for _ in range(20):  # short tasks: several go to the processor at once
        h.add("w")
        h.host.processor_message(processor, TaskResult(b"w", STATUS_OK, b"", ""))
    h.results.clear()
    for name in ("a", "b", "c"):
        h.add(name)
    assert processor.tasks()[-3:] == [b"a", b"b", b"c"]
    h.host.processor_batch(processor, [TaskResult(b"a", STATUS_OK, b"", ""), TaskResult(b"b", STATUS_OK, b"", "")])
    assert [r.task_id for r in h.results] == [b"a", b"b"]
    assert h.host.pipeline.inflight() == [b"c"]
    replaced = processor
    h.connect_processor(pid=11)  # (the old connection's last batch crossed the new one)
    h.results.clear()
    h.host.processor_batch(replaced, [TaskResult(b"c", STATUS_OK, b"", "")] * 2)
    assert h.results == []
    h.host.processor_batch(h.host.processor, [ProcessorWaiting(b"c", True), ProcessorWaiting(b"c", False)])
    assert h.host.pipeline.blocked_count() == 0 and not h.host.processor.closed
