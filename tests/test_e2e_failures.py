"""Serialization and exit failures at every stage (after loky's crash matrix), end to end.

Each ends in a specific exception on that future only, never a hang, and the client and
the cluster go on.
"""

import os
import sys
import threading

import pytest

from scaler import Client
from scaler.client.agent import RemoteTraceback
from scaler.utility.exceptions import DeserializeObjectError, TaskExceptionNotSerializableError, TaskExitError

TIMEOUT = 120


def _refuse_to_load():
    raise RuntimeError("cannot be rebuilt here")


class LoadsNowhere:
    """Pickles fine; unpickling it raises."""

    def __reduce__(self):
        return _refuse_to_load, ()


class LoadsOnlyInTheClient:
    """Pickles fine; unpickling raises in a processor (which has SCALER_SCHEDULER_ADDRESS set)."""

    def __reduce__(self):
        return _rebuild_outside_a_worker, ()


def _rebuild_outside_a_worker():
    if os.environ.get("SCALER_SCHEDULER_ADDRESS"):
        raise RuntimeError("cannot be rebuilt on a worker")
    return LoadsOnlyInTheClient.__new__(LoadsOnlyInTheClient)


class UnpicklableError(Exception):
    def __init__(self):
        super().__init__("carries a lock")
        self.lock = threading.Lock()


def exits(code):
    sys.exit(code)


def interrupted():
    raise KeyboardInterrupt


def returns_a_lock():
    return threading.Lock()


def returns_something_the_client_cannot_load():
    return LoadsNowhere()


def raises_unpicklable():
    raise UnpicklableError()


def identity(x):
    return x


def test_sys_exit_in_a_task_is_a_task_error_not_an_exit(client):
    with pytest.raises(TaskExitError, match=r"SystemExit\(3\)") as info:
        client.submit(exits, 3).result(timeout=TIMEOUT)
    assert isinstance(info.value, Exception)  # `except Exception` catches it
    assert isinstance(info.value.__cause__, RemoteTraceback) and "sys.exit(code)" in str(info.value.__cause__)
    assert client.submit(identity, 1).result(timeout=TIMEOUT) == 1


def test_keyboard_interrupt_in_a_task_is_a_task_error(client):
    with pytest.raises(TaskExitError, match="KeyboardInterrupt"):
        client.submit(interrupted).result(timeout=TIMEOUT)


def test_an_argument_that_cannot_be_pickled_fails_at_submit(client):
    with pytest.raises(Exception, match="(?i)pickle|lock"):
        client.submit(identity, threading.Lock())
    assert client.submit(identity, 2).result(timeout=TIMEOUT) == 2


def test_an_argument_that_cannot_be_unpickled_on_the_worker_fails_its_task(client):
    future = client.submit(identity, LoadsOnlyInTheClient())
    with pytest.raises(RuntimeError, match="cannot be rebuilt on a worker"):
        future.result(timeout=TIMEOUT)
    assert client.submit(identity, 3).result(timeout=TIMEOUT) == 3


def test_a_result_that_cannot_be_pickled_fails_its_task(client):
    with pytest.raises(Exception, match="(?i)pickle|lock"):
        client.submit(returns_a_lock).result(timeout=TIMEOUT)


def test_a_result_the_client_cannot_unpickle_fails_on_result(client):
    future = client.submit(returns_something_the_client_cannot_load)
    with pytest.raises(DeserializeObjectError, match="cannot be rebuilt here"):
        future.result(timeout=TIMEOUT)


def test_an_exception_that_cannot_be_pickled_arrives_as_text(client):
    with pytest.raises(TaskExceptionNotSerializableError, match="UnpicklableError: carries a lock"):
        client.submit(raises_unpicklable).result(timeout=TIMEOUT)


def test_failures_end_only_their_own_future(client):
    futures = [client.submit(exits, 1), client.submit(returns_a_lock), client.submit(raises_unpicklable),
               client.submit(identity, "fine")]
    for future in futures[:3]:
        assert future.exception(timeout=TIMEOUT) is not None
    assert futures[3].result(timeout=TIMEOUT) == "fine"


# --- admission: max_number_of_tasks_waiting ---------------------------------------------------

def test_a_submit_past_max_number_of_tasks_waiting_fails_at_once(make_combo):
    from scaler.utility.exceptions import SchedulerBusyError
    combo = make_combo(n_workers=0, max_number_of_tasks_waiting=2)  # no worker: everything waits
    with Client(combo.get_address()) as client:
        waiting = [client.submit(identity, i) for i in range(2)]
        with pytest.raises(SchedulerBusyError, match="2 tasks waiting"):
            client.submit(identity, 2).result(timeout=TIMEOUT)
        with pytest.raises(SchedulerBusyError):
            client.get({"a": 1, "b": (identity, "a")}, "b")
        for future in waiting:
            assert future.cancel()
        # cancelled ones no longer wait: there is room for two again, and only two
        again = [client.submit(identity, i) for i in (3, 4)]
        with pytest.raises(SchedulerBusyError):
            client.submit(identity, 5).result(timeout=TIMEOUT)
        # replies come in order: had the two been refused, they would have ended already
        assert not any(future.done() for future in again)
        for future in again:
            future.cancel()


# --- clear() reaches the processors' caches ------------------------------------------------------

def size_of(data):
    return len(data)


def cached_object_ids():
    """The ids of the objects this processor holds (raw or deserialised)."""
    from scaler.utility import task_context
    processor = task_context.wait_hook.__self__
    return sorted(set(processor.raw) | set(processor.loaded))


def test_clear_drops_the_objects_processors_cache(make_combo):
    combo = make_combo(n_workers=1)
    with Client(combo.get_address()) as client:
        ref = client.send_object(b"x" * 10 ** 6, name="big")
        assert client.submit(size_of, ref).result(timeout=TIMEOUT) == 10 ** 6
        assert ref.object_id in client.submit(cached_object_ids).result(timeout=TIMEOUT)
        client.clear()
        assert ref.object_id not in client.submit(cached_object_ids).result(timeout=TIMEOUT)
        assert client.submit(size_of, b"still works").result(timeout=TIMEOUT) == 11
