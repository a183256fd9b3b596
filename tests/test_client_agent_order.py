"""The client's I/O thread keeps submission order while tasks wait for their objects to be
stored (``ClientAgent.submit``). In-process: the agent is driven directly, its connections
are recorders."""

import pytest

from scaler.client.agent import ClientAgent
from scaler.client.future import ScalerFuture
from scaler.protocol.messages import ObjectPut, ObjectPutReply, TaskSubmit
from scaler.utility.exceptions import ObjectStorageException


class _Recorder:
    def __init__(self):
        self.sent = []
        self.tls = False

    def send(self, msg):
        self.sent.append(msg)


@pytest.fixture
def agent():
    agent = ClientAgent("tcp://127.0.0.1:1", b"c" * 16, None, 60.0, 1.0, None)
    agent.scheduler, agent.storage = _Recorder(), _Recorder()
    yield agent
    agent.loop.close()


def _batch(*names):
    return [(ScalerFuture(name.encode()), TaskSubmit(name.encode(), 0, b"f", b"", "", 0)) for name in names]


def _sent(agent):
    return [msg.task_id.decode() for msg in agent.scheduler.sent if type(msg) is TaskSubmit]


def test_a_batch_waits_behind_an_earlier_one_held_for_its_objects(agent):
    """A map's first batch carries a large argument (stored first); the next one, with
    nothing to store, must not overtake it: equal priorities run in submission order."""
    agent.put(b"x" * 32, b"payload")
    assert type(agent.storage.sent[0]) is ObjectPut
    agent.submit(_batch("a0", "a1"), [b"x" * 32])
    agent.submit(_batch("b0"), [])
    agent.submit(_batch("c0"), [])
    assert _sent(agent) == []
    assert not agent.submit_now(_batch("d0"), [])  # the caller's thread may not jump the queue either
    agent.storage_message(agent.storage, ObjectPutReply(b"x" * 32, ""))
    assert _sent(agent) == ["a0", "a1", "b0", "c0"]
    agent.submit(_batch("e0"), [])
    assert _sent(agent) == ["a0", "a1", "b0", "c0", "e0"]


def test_a_refused_store_fails_its_batch_and_releases_those_behind_it(agent):
    agent.put(b"x" * 32, b"payload")
    first, second = _batch("a0"), _batch("b0")
    agent.submit(first, [b"x" * 32])
    agent.submit(second, [])
    agent.storage_message(agent.storage, ObjectPutReply(b"x" * 32, "storage full"))
    assert _sent(agent) == ["b0"]
    with pytest.raises(ObjectStorageException):
        first[0][0].result(timeout=5)
    assert not second[0][0].done()


def test_a_later_batch_held_for_its_own_object_keeps_the_order_of_the_acks_it_waits_for(agent):
    agent.put(b"x" * 32, b"one")
    agent.put(b"y" * 32, b"two")
    agent.submit(_batch("a0"), [b"x" * 32])
    agent.submit(_batch("b0"), [b"y" * 32])
    agent.storage_message(agent.storage, ObjectPutReply(b"y" * 32, ""))  # the later one's object first
    assert _sent(agent) == []
    agent.storage_message(agent.storage, ObjectPutReply(b"x" * 32, ""))
    assert _sent(agent) == ["a0", "b0"]


def test_the_callers_thread_cannot_slip_in_while_a_released_batch_is_being_sent(agent):
    """The acknowledgement releases the queued batches on the I/O thread; until they are
    written, a batch from the caller's thread (submit_now) must not go first."""
    written = []

    def send(msg):
        if not written:
            written.append(("user", agent.submit_now(_batch("d0"), [])))
        written.append(msg.task_id.decode())

    agent.scheduler.send = send
    agent.scheduler.send_from_thread = lambda parts: True
    agent.put(b"x" * 32, b"payload")
    agent.submit(_batch("a0", "a1"), [b"x" * 32])
    agent.storage_message(agent.storage, ObjectPutReply(b"x" * 32, ""))
    assert written == [("user", False), "a0", "a1"]
