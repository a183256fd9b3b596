"""A worker's processor being replaced: what reaches the new one before it joins the
scheduler, the agent starting exactly one successor, and an object the processor could not
map being sent to it again. In-process, no scheduler."""

import itertools
import os
import socket
import sys

import pytest

from scaler.config.components import WorkerConfig
from scaler.io import shm
from scaler.io.connection import BlockingChannel
from scaler.io.fd_connection import FdChannel
from scaler.io.loop import EventLoop
from scaler.protocol.messages import ProcessorDial, ProcessorObjectShm, WorkerRestartProcessor
from scaler.utility import process as proc_util
from scaler.worker import agent as agent_module
from scaler.worker import processor as processor_module

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memfds and SCM_RIGHTS: Linux")


@pytest.mark.skipif(not shm.available(), reason="no shared memory here")
def test_objects_sent_before_the_dial_keep_their_descriptors_in_order(monkeypatch):
    """A fetch for the processor that was replaced may land on its successor's socketpair
    before that one was told to join: it is kept, with its descriptor, so every later
    object still maps its own memfd (it used to be dropped, leaving its descriptor queued:
    each later object then mapped the previous one's)."""
    agent_sock, processor_sock = socket.socketpair()
    agent = FdChannel(agent_sock)
    size = 2 * 1024 * 1024
    x, y = shm.make_sealed([b"X" * size]), shm.make_sealed([b"Y" * size])
    agent.send_with_fd(ProcessorObjectShm(b"x" * 32, 0, size), x.fd)
    agent.send(ProcessorDial("tcp://127.0.0.1:1", b"", "", b"w" * 16, b"t" * 16))
    agent.send_with_fd(ProcessorObjectShm(b"x" * 32, 0, size), x.fd)
    agent.send_with_fd(ProcessorObjectShm(b"y" * 32, 0, size), y.fd)
    scheduler_end, processor_end = socket.socketpair()
    monkeypatch.setattr(processor_module, "join_scheduler", lambda msg: BlockingChannel(processor_end))
    seen = {}

    def serve(self):
        while b"y" * 32 not in self.raw:
            self._receive(5000)
        seen["x"] = bytes(self.raw[b"x" * 32][:4])
        seen["y"] = bytes(self.raw[b"y" * 32][:4])
        seen["left"] = len(self.agent.received_fds)

    monkeypatch.setattr(processor_module.Processor, "serve", serve)
    try:
        processor_module.main(["--channel-fd", str(processor_sock.detach()), "--logging-level", "ERROR"])
        assert seen == {"x": b"XXXX", "y": b"YYYY", "left": 0}
    finally:
        for thing in (x, y):
            thing.close()
        for sock in (agent_sock, scheduler_end, processor_end):
            sock.close()


class _FakeChild:
    pids = itertools.count(1001)

    def __init__(self):
        self.pid = next(self.pids)
        self.stopped = False

    def stop(self, grace_seconds=0.0, signum=None):
        self.stopped = True
        return 1


def test_a_restart_during_the_delayed_start_after_a_death_starts_one_processor(monkeypatch):
    """The processor's death schedules its successor's start; a restart the scheduler asks
    for before that timer fires must not leave two processors running."""
    started = []
    monkeypatch.setattr(proc_util, "spawn", lambda *a, **k: started.append(_FakeChild()) or started[-1])
    monkeypatch.setattr(proc_util, "can_fork", lambda: False)
    loop = EventLoop()
    try:
        agent = agent_module.WorkerAgent(loop, WorkerConfig(scheduler_address="tcp://127.0.0.1:1"))
        agent._start_processor()
        agent.processor_ready = agent.processor_dialed = True
        agent.processor_lost(agent.processor_conn, "channel closed")  # its start is scheduled
        agent.scheduler_message(None, WorkerRestartProcessor("task cancelled while running"))
        loop._run_timers()
        running = [child for child in started if not child.stopped]
        assert running == [agent.processor] and len(started) == 2
    finally:
        agent._stop_processor()
        loop.close()


def test_an_object_that_could_not_be_mapped_then_dropped_is_awaited_when_sent_again():
    """An object that came without its descriptor is marked unavailable (the task needing it
    fails). Once the scheduler drops it, a later task that needs it again must wait for the
    copy the agent sends next, not fail at once on the stale mark."""
    import pickle

    from scaler.protocol.messages import ProcessorDropObjects, ProcessorObject
    scheduler_end, processor_end = socket.socketpair()
    agent_end, processor_agent_end = socket.socketpair()
    processor = processor_module.Processor(BlockingChannel(processor_end), BlockingChannel(processor_agent_end),
                                           gc_interval=0, trim_threshold=-1)
    agent = BlockingChannel(agent_end)
    object_id = b"o" * 32
    try:
        processor._handle(ProcessorObjectShm(object_id, 0, 10))  # a plain channel: no descriptor with it
        assert object_id in processor.unavailable
        processor._handle(ProcessorDropObjects([object_id]))
        assert object_id not in processor.unavailable
        agent.send(ProcessorObject(object_id, pickle.dumps("the object")))  # fetched again for a new task
        assert processor._object(object_id, processor.default_serializer) == "the object"
    finally:
        os.close(processor.wake_reader)
        os.close(processor.wake_writer)
        for sock in (scheduler_end, processor_end, agent_end, processor_agent_end):
            sock.close()


def test_a_cancel_for_a_task_the_processor_already_ran_is_not_kept():
    """The scheduler cancels tasks it sent ahead (ProcessorCancel) without knowing whether
    the processor has reached them: a cancel for one already run must not be remembered for
    ever (64 ids per cancelled map of short tasks, for the processor's whole life)."""
    from scaler.protocol.messages import ProcessorCancel, ProcessorTask
    scheduler_end, processor_end = socket.socketpair()
    agent_end, processor_agent_end = socket.socketpair()
    processor = processor_module.Processor(BlockingChannel(processor_end), BlockingChannel(processor_agent_end),
                                           gc_interval=0, trim_threshold=-1)
    try:
        waiting = ProcessorTask(b"t" * 32, 0, b"f" * 32, b"", 0, b"o" * 32)
        processor._handle(waiting)
        processor._handle(ProcessorCancel(b"t" * 32))
        processor._handle(ProcessorCancel(b"r" * 32))  # ran already: nothing here to skip
        assert processor.cancelled == {b"t" * 32}
        processor._run_one(processor.pending.popleft())  # skipped: answered "cancelled", forgotten
        assert processor.cancelled == set()
    finally:
        os.close(processor.wake_reader)
        os.close(processor.wake_writer)
        for sock in (scheduler_end, processor_end, agent_end, processor_agent_end):
            sock.close()
