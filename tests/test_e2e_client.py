"""End to end: the Client API against a real scheduler and real workers (one shared combo)."""

import concurrent.futures
import hashlib
import logging
import os
import sys
import threading

import cloudpickle
import pytest

from scaler import Client, ObjectReference, Serializer
from scaler.client.agent import RemoteTraceback
from scaler.utility.exceptions import TaskExceptionNotSerializableError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="e2e tests need Linux")

TIMEOUT = 60  # seconds, for any single wait on the cluster
BIG = 200 * 10 ** 6  # 200 MB


# --- task functions (module level: workers import them by name) ---------------------------

def add(a, b):
    return a + b


def square(x):
    return x * x


def combine(a, b=0, *, c=0, d=0):
    return [a, b, c, d]


def describe_object(obj, extra=None):
    return (type(obj).__name__, len(obj), bytes(obj[:4]), extra)


def keyword_only_object(*, data, scale=1):
    return len(data) * scale


def raise_value_error_in_task(x):
    raise ValueError("bad value %r" % (x,))


class CustomTaskError(Exception):
    """A user-defined exception type that pickles fine."""

    def __init__(self, code):
        super().__init__(code)  # args must rebuild the exception: pickle calls CustomTaskError(*args)
        self.code = code

    def __str__(self):
        return "custom failure %d" % self.code


def raise_custom_error(code):
    raise CustomTaskError(code)


class UnpicklableError(Exception):
    """Holds a lock: pickling it fails in the worker."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable_error():
    raise UnpicklableError("cannot travel")


class UnrebuildableError(Exception):
    """Pickles, but ``__init__`` needs two arguments while ``args`` holds one: unpickling fails."""

    def __init__(self, first, second):
        super().__init__(first)
        self.second = second


def raise_unrebuildable_error():
    raise UnrebuildableError("first", "second")


def blob_pattern(size):
    """Deterministic, non-uniform bytes of ``size`` (cheap to build, catches misplaced chunks)."""
    block = hashlib.sha256(b"scaler-e2e").digest() * 2048  # 64 KiB
    whole, rest = divmod(size, len(block))
    out = bytearray(block * whole + block[:rest])
    for i in range(0, size, 1 << 20):  # a position marker every MiB
        out[i:i + 8] = i.to_bytes(8, "little")
    return bytes(out)


def digest(data):
    return len(data), hashlib.sha256(data).hexdigest()


def make_blob(size):
    return blob_pattern(size)


def digest_with_offset(data, offset):
    return offset, digest(data)


# --- submit / map / starmap / map_futures ------------------------------------------------------

def test_submit_returns_result(client):
    assert client.submit(add, 2, 3).result(timeout=TIMEOUT) == 5


def test_submit_kwargs(client):
    future = client.submit(combine, 1, 2, c=3, d=4)
    assert future.result(timeout=TIMEOUT) == [1, 2, 3, 4]
    assert client.submit(combine, a=7, d=9).result(timeout=TIMEOUT) == [7, 0, 0, 9]


def test_submit_builtin_and_lambda(client):
    assert client.submit(sorted, [3, 1, 2]).result(timeout=TIMEOUT) == [1, 2, 3]
    assert client.submit(lambda x: x + 1, 41).result(timeout=TIMEOUT) == 42


def test_map(client):
    assert client.map(square, range(10)) == [x * x for x in range(10)]
    assert client.map(add, [1, 2, 3], [10, 20, 30]) == [11, 22, 33]
    assert client.map(square, []) == []


def sleep_then(x):
    import time
    time.sleep(0.2)
    return x


class Unpicklable:
    def __reduce__(self):
        raise TypeError("cannot be pickled, on purpose")


def _items_then_failure(count):
    yield from range(count)
    raise RuntimeError("the iterable broke, on purpose")


@pytest.mark.parametrize("case", ["unpicklable item", "iterable raises", "interrupted as a batch leaves"])
def test_a_map_that_fails_midway_cancels_the_tasks_it_already_sent(client, case, monkeypatch):
    """The first batches of a map are on their way before the rest is built. When an item
    cannot be pickled, or the iterable raises, or Ctrl-C lands while a batch is being
    handed over, the map raises, and the tasks already sent (whose futures the caller never
    got) are cancelled, not left to run unseen: behind them, the next task would wait for
    up to 2 000 tasks of 0.2 s on 2 workers (~200 s)."""
    from scaler.client.client import SUBMIT_BATCH
    count = 2 * SUBMIT_BATCH
    if case == "interrupted as a batch leaves":
        send, calls = client._send, []

        def send_then_interrupt(*args):
            send(*args)
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt  # the batch has left, the map has not counted it yet

        monkeypatch.setattr(client, "_send", send_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            client.map(sleep_then, range(count))
        monkeypatch.undo()
    elif case == "unpicklable item":
        items = [*range(count), Unpicklable()]
        with pytest.raises(TypeError, match="on purpose"):
            client.map(sleep_then, items)
    else:
        with pytest.raises(RuntimeError, match="on purpose"):
            client.map(sleep_then, _items_then_failure(count))
    assert client.submit(add, 1, 2).result(timeout=30) == 3


@pytest.mark.parametrize("capabilities", [{"a,b": 1}, {"gpu=2": -1}, {"my gpu": 1}, {"": 1}, {"gpu": -2},
                                          {"gpu": 1.5}, {"gpu": True}, {"caf\udce9": 1}, {1: 1}, "gpu"])
def test_capabilities_a_worker_could_never_advertise_are_refused_at_submit(client, capabilities):
    """The same rules as --per-worker-capabilities: a name with a separator in it would
    travel as other names ({"a,b": 1} as "a" and "b=1"), text that is not UTF-8 used to
    kill the client's I/O thread. A ValueError from the call; the client goes on."""
    from scaler.config.capabilities import CapabilitiesError
    with pytest.raises(CapabilitiesError):
        client.submit_verbose(add, (1, 2), {}, capabilities=capabilities)
    with pytest.raises(CapabilitiesError):
        client.map(add, [1], [2], capabilities=capabilities)
    assert client.submit(add, 2, 3).result(timeout=TIMEOUT) == 5


def test_a_map_sends_a_small_first_batch_then_doubles(client, monkeypatch):
    """The workers start on a map's first 64 tasks while the client builds the rest (a first
    batch of 1 000 no-op tasks reached them 20-40 ms after the map began)."""
    from scaler.client.client import SUBMIT_BATCH, SUBMIT_FIRST
    send, sizes = client._send, []

    def recording_send(batch, puts, needs):
        sizes.append(len(batch))
        send(batch, puts, needs)

    monkeypatch.setattr(client, "_send", recording_send)
    count = 3 * SUBMIT_BATCH
    assert client.map(square, range(count)) == [i * i for i in range(count)]
    expected, size = [], SUBMIT_FIRST
    while sum(expected) < count:
        expected.append(min(size, count - sum(expected)))
        size = min(size * 2, SUBMIT_BATCH)
    assert sizes == expected and sizes[:5] == [64, 128, 256, 512, 1000]


def test_starmap(client):
    assert client.starmap(add, [(1, 2), (3, 4), [5, 6]]) == [3, 7, 11]


def test_map_futures_in_order(client):
    futures = client.map_futures(square, range(50))
    done, not_done = concurrent.futures.wait(futures, timeout=TIMEOUT)
    assert not not_done
    assert [f.result() for f in futures] == [x * x for x in range(50)]
    assert all(isinstance(f, concurrent.futures.Future) for f in futures)


def test_as_completed_works_on_scaler_futures(client):
    futures = [client.submit(square, x) for x in range(20)]
    seen = sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=TIMEOUT))
    assert seen == sorted(x * x for x in range(20))


def test_asyncio_wrap_future(client):
    import asyncio

    async def main():
        futures = [asyncio.wrap_future(client.submit(square, x)) for x in range(5)]
        return await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


def test_map_100000_tasks(client):
    n = 100000
    results = client.map(square, range(n))
    assert len(results) == n
    assert results == [x * x for x in range(n)]


# --- objects ----------------------------------------------------------------------------------

def test_send_object_as_positional_and_keyword_argument(client):
    ref = client.send_object(b"abcdefgh" * 1000, name="letters")
    assert isinstance(ref, ObjectReference)
    assert client.submit(describe_object, ref).result(timeout=TIMEOUT) == ("bytes", 8000, b"abcd", None)
    assert client.submit(describe_object, ref, extra=1).result(timeout=TIMEOUT) == ("bytes", 8000, b"abcd", 1)
    assert client.submit(describe_object, obj=ref, extra=2).result(timeout=TIMEOUT) == ("bytes", 8000, b"abcd", 2)
    assert client.submit(keyword_only_object, data=ref, scale=3).result(timeout=TIMEOUT) == 24000


def test_send_object_used_by_many_tasks(client):
    ref = client.send_object(list(range(1000)))
    assert client.map(len, [ref] * 10) == [1000] * 10
    assert client.starmap(describe_object, [(ref, i) for i in range(4)]) == [
        ("list", 1000, b"\x00\x01\x02\x03", i) for i in range(4)]
    assert client.map(add, [ref] * 3, [[1], [2], [3]])[2][-1] == 3


# --- errors -------------------------------------------------------------------------------------

def test_remote_exception_keeps_type_and_traceback(client):
    future = client.submit(raise_value_error_in_task, 42)
    with pytest.raises(ValueError) as info:
        future.result(timeout=TIMEOUT)
    assert type(info.value) is ValueError
    assert "bad value 42" in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    text = str(cause)
    assert "Traceback" in text
    assert "raise_value_error_in_task" in text
    assert "bad value 42" in text
    assert future.exception(timeout=0) is info.value


def test_remote_custom_exception_type(client):
    with pytest.raises(CustomTaskError) as info:
        client.submit(raise_custom_error, 7).result(timeout=TIMEOUT)
    assert info.value.code == 7
    assert str(info.value) == "custom failure 7"
    assert "raise_custom_error" in str(info.value.__cause__)


def test_exception_in_map_is_raised(client):
    with pytest.raises(ValueError):
        client.map(raise_value_error_in_task, [1, 2, 3])
    assert client.submit(add, 1, 1).result(timeout=TIMEOUT) == 2  # the client is still usable


def test_unpicklable_exception(client):
    with pytest.raises(TaskExceptionNotSerializableError) as info:
        client.submit(raise_unpicklable_error).result(timeout=TIMEOUT)
    message = str(info.value)
    assert "UnpicklableError" in message
    assert "cannot travel" in message


def test_exception_that_cannot_be_rebuilt(client):
    with pytest.raises(TaskExceptionNotSerializableError) as info:
        client.submit(raise_unrebuildable_error).result(timeout=TIMEOUT)
    assert "UnrebuildableError" in str(info.value)


# --- big payloads ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_blob():
    data = blob_pattern(BIG)
    return data, digest(data)


def test_200mb_argument(client, big_blob):
    data, expected = big_blob
    assert client.submit(digest, data).result(timeout=TIMEOUT) == expected


def test_200mb_result(client, big_blob):
    _, expected = big_blob
    result = client.submit(make_blob, BIG).result(timeout=TIMEOUT)
    assert digest(result) == expected


def test_200mb_send_object_used_by_several_tasks(client, big_blob):
    data, expected = big_blob
    ref = client.send_object(data, name="big")
    assert ref.size >= BIG
    futures = [client.submit(digest_with_offset, ref, offset=i) for i in range(6)]
    assert [f.result(timeout=TIMEOUT) for f in futures] == [(i, expected) for i in range(6)]


# --- several clients --------------------------------------------------------------------------

def test_two_clients_in_threads(shared_combo):
    errors = []
    results = {}
    start = threading.Barrier(2, timeout=TIMEOUT)

    def run(tag):
        try:
            with Client(shared_combo.get_address()) as own:
                start.wait()
                futures = [own.submit(add, tag, i) for i in range(200)]
                mapped = own.map(add, [tag] * 300, range(300))
                results[tag] = ([f.result(timeout=TIMEOUT) for f in futures], mapped)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(tag,)) for tag in (1000, 2000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    assert not any(thread.is_alive() for thread in threads), "a client thread hung"
    assert not errors, errors
    for tag in (1000, 2000):
        submitted, mapped = results[tag]
        assert submitted == [tag + i for i in range(200)]
        assert mapped == [tag + i for i in range(300)]


def test_two_clients_in_processes(shared_combo, procs):
    script = (
        "import sys\n"
        "from scaler import Client\n"
        "def mul(a, b):\n"
        "    return a * b\n"
        "tag = int(sys.argv[2])\n"
        "with Client(sys.argv[1]) as c:\n"
        "    got = c.map(mul, [tag] * 500, range(500))\n"
        "    assert got == [tag * i for i in range(500)], got[:10]\n"
        "    assert c.submit(mul, tag, 2).result(timeout=60) == 2 * tag\n"
        "print('CLIENT-OK', tag, flush=True)\n"
    )
    children = [procs.python(["-c", script, shared_combo.get_address(), str(tag)], "client-%d" % tag)
                for tag in (3, 5)]
    for child, tag in zip(children, (3, 5)):
        child.output.wait_for(r"^CLIENT-OK %d$" % tag, TIMEOUT)
        assert child.popen.wait(TIMEOUT) == 0


# --- other ways to reach a cluster ------------------------------------------------------------

class TaggingSerializer(Serializer):
    """A custom serializer: it travels to the workers, which must use it both ways."""

    @staticmethod
    def serialize(obj):
        return b"TAG" + cloudpickle.dumps(obj)

    @staticmethod
    def deserialize(payload):
        if bytes(payload[:3]) != b"TAG":
            raise ValueError("not made by TaggingSerializer")
        return cloudpickle.loads(bytes(payload[3:]))


def test_custom_serializer(make_combo):
    combo = make_combo(n_workers=1)
    with Client(combo.get_address(), serializer=TaggingSerializer()) as client:
        assert client.submit(add, 2, 3).result(timeout=TIMEOUT) == 5
        assert client.map(add, [1, 2], [3, 4]) == [4, 6]
        ref = client.send_object([1, 2, 3])
        assert client.submit(len, ref).result(timeout=TIMEOUT) == 3
        big = b"a" * 200000  # through object storage, serialized by the custom serializer
        assert client.submit(digest, big).result(timeout=TIMEOUT) == digest(big)
        assert len(client.submit(make_blob, 300000).result(timeout=TIMEOUT)) == 300000
        with pytest.raises(ValueError):
            client.submit(raise_value_error_in_task, 1).result(timeout=TIMEOUT)


def test_explicit_tcp_address(make_combo):
    from e2e_support import free_port_pair

    port = free_port_pair()
    combo = make_combo(n_workers=1, address="tcp://127.0.0.1:%d" % port)
    assert combo.get_address() == "tcp://127.0.0.1:%d" % port
    assert combo.object_storage_address == "tcp://127.0.0.1:%d" % (port + 1)  # port + 1 by default
    with Client(address="tcp://127.0.0.1:%d" % port) as client:
        assert client.submit(add, 2, 3).result(timeout=TIMEOUT) == 5


def test_ipc_address(make_combo, tmp_path):
    path = str(tmp_path / "scheduler.sock")
    combo = make_combo(n_workers=1, address="ipc://" + path)
    with Client(combo.get_address()) as client:
        assert client.submit(add, 2, 3).result(timeout=TIMEOUT) == 5
        ref = client.send_object(b"x" * 100000)
        assert client.submit(len, ref).result(timeout=TIMEOUT) == 100000
    combo.shutdown()
    assert os.listdir(str(tmp_path)) == [], "socket files left behind"


# --- many clients, many cancellations ---------------------------------------------------------

def nap(x):
    import time
    time.sleep(0.05)
    return x


def test_sixteen_clients_at_once(shared_combo):
    errors, results = [], {}

    def run(tag):
        try:
            with Client(shared_combo.get_address()) as own:
                results[tag] = own.map(add, [tag] * 500, range(500))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(tag,)) for tag in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    assert not any(thread.is_alive() for thread in threads), "a client thread hung"
    assert not errors, errors
    assert all(results[tag] == [tag + i for i in range(500)] for tag in range(16))


def test_cancelling_ten_thousand_queued_tasks(make_combo):
    combo = make_combo(n_workers=2)
    with Client(combo.get_address()) as client:
        futures = client.map_futures(nap, range(10000))  # 250 s of work on 2 workers
        futures[0].result(timeout=TIMEOUT)
        cancelled = sum(f.cancel() for f in futures)
        assert cancelled >= 9990
        assert all(f.done() for f in futures)
        # Had the cancelled tasks stayed queued, this would wait minutes.
        assert client.submit(add, 1, 2).result(timeout=30) == 3



def test_closing_right_after_cancelling_queued_tasks_prints_nothing(make_combo, caplog):
    # Regression: the close ended again the futures whose cancels were still on their way,
    # and concurrent.futures logged "Future ... in unexpected state: CANCELLED_AND_NOTIFIED"
    # for each of them (on stderr, where logging is not configured).
    combo = make_combo(n_workers=1)
    with caplog.at_level(logging.DEBUG, logger="concurrent.futures"):
        with Client(combo.get_address()) as client:
            futures = client.map_futures(nap, range(2000))
            futures[0].result(timeout=TIMEOUT)
            assert sum(f.cancel() for f in futures) >= 1990
        assert all(f.cancelled() for f in futures[1:])
    assert [r.getMessage() for r in caplog.records if r.name == "concurrent.futures"] == []

# Regression: Client.clear() used to cancel only tasks already sent; tasks still held on the
# I/O thread until their objects were stored went out after clear() and failed.


def test_clear_cancels_tasks_and_forgets_objects(shared_combo):
    from scaler.utility.exceptions import MissingObjects

    with Client(shared_combo.get_address()) as client:
        ref = client.send_object(b"x" * 1000)
        assert client.submit(nap, 0).result(timeout=TIMEOUT) == 0  # nap is stored: its tasks leave at once
        futures = client.map_futures(nap, range(1000))
        client.clear()
        assert all(f.done() for f in futures)
        with pytest.raises(MissingObjects):
            client.submit(len, ref).result(timeout=TIMEOUT)
        assert client.submit(add, 1, 2).result(timeout=TIMEOUT) == 3
        assert client.submit(len, client.send_object(b"y" * 10)).result(timeout=TIMEOUT) == 10


def test_clear_cancels_tasks_still_waiting_for_their_objects(shared_combo):
    with Client(shared_combo.get_address()) as client:
        # A 50 MB argument is stored first; its task waits on the client until storage says so.
        held = client.submit(length_of, b"h" * (50 * 10 ** 6))
        client.clear()
        assert held.done(), "clear() returned with a task of this client still pending"
        assert held.cancelled()


# --- done-callbacks ---------------------------------------------------------------------------

def multiply(a, b):
    return a * b


def triple(a):
    return 3 * a


# Regression: done-callbacks run on the client's I/O thread, and submitting from one used
# to block on a Waiter only that thread could set (a new function, or an argument over the
# inline limit, froze the client for 60 s). Stores are now acknowledged asynchronously and
# the tasks needing them are held back on the I/O thread until then.


def test_done_callback_can_submit_a_known_function(client):
    chained, done = [], threading.Event()
    assert client.submit(triple, 1).result(timeout=TIMEOUT) == 3  # the function is known already

    def callback(future):
        try:
            chained.append(client.submit(triple, future.result()))
        finally:
            done.set()

    client.submit(add, 1, 2).add_done_callback(callback)
    assert done.wait(TIMEOUT), "the callback did not finish"
    assert chained[0].result(timeout=TIMEOUT) == 9


@pytest.mark.parametrize("what", ["new_function", "big_argument"])
def test_done_callback_can_submit_anything(make_combo, what):
    combo = make_combo(n_workers=1)
    with Client(combo.get_address()) as own:
        own.submit(add, 0, 0).result(timeout=TIMEOUT)
        chained, done = [], threading.Event()

        def callback(future):
            try:
                if what == "new_function":
                    chained.append(own.submit(multiply, future.result(), 10))
                else:
                    chained.append(own.submit(add, future.result(), b"x" * (1 << 20)))
            except BaseException as exc:
                chained.append(exc)
            finally:
                done.set()

        first = own.submit(add, 1, 2) if what == "new_function" else own.submit(add, b"", b"y")
        first.add_done_callback(callback)
        assert done.wait(5), "the callback is stuck: the client's I/O thread waits for itself"
        result = chained[0].result(timeout=TIMEOUT)
        assert result == (30 if what == "new_function" else b"y" + b"x" * (1 << 20))


def announce_and_measure(port, data):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"%d\n" % os.getpid())
    return len(data)


def test_task_cancelled_while_its_argument_is_stored_never_runs(make_combo, announcements):
    combo = make_combo(n_workers=1)
    with Client(combo.get_address()) as own:
        own.submit(add, 1, 1).result(timeout=TIMEOUT)
        future = own.submit(announce_and_measure, announcements.port, b"z" * (50 * 10 ** 6))
        assert future.cancel()
        own.send_object(b"sync")  # waits: every store before it is acknowledged by now
        # On this single worker the cancelled task, had it been sent, would run (and call us) first.
        assert own.submit(add, 2, 3).result(timeout=TIMEOUT) == 5
        announcements.sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            announcements.sock.accept()


def length_of(data):
    return len(data)


def test_disconnect_while_an_argument_is_stored_settles_the_future(make_combo):
    combo = make_combo(n_workers=1)
    own = Client(combo.get_address())
    future = own.submit(length_of, b"z" * (50 * 10 ** 6))
    own.disconnect()
    assert future.done()
    from scaler.utility.exceptions import ClientQuitException
    with pytest.raises((concurrent.futures.CancelledError, ClientQuitException)):
        future.result(timeout=0)
    with Client(combo.get_address()) as fresh:
        assert fresh.submit(add, 1, 2).result(timeout=TIMEOUT) == 3


# --- the submitting thread writes a task itself when nothing is ahead of it ---------------

def test_submits_written_by_the_callers_thread_race_nothing(shared_combo):
    """submit() writes the task from the caller's thread when the I/O thread holds nothing
    for the scheduler (ClientAgent.submit_now). Eight threads submitting at once, between
    maps, cancels and send_object that go through the I/O thread: every result is right,
    each task runs once, and the direct path was really taken."""
    with Client(shared_combo.get_address()) as client:
        client.submit(square, 1).result(TIMEOUT)  # the function is stored: later submits can go direct
        errors = []

        def run(tag):
            try:
                for i in range(150):
                    if i % 50 == 7:
                        ref = client.send_object(bytes(range(tag % 200, tag % 200 + 8)))
                        assert client.submit(describe_object, ref).result(TIMEOUT)[1] == 8
                    if i % 40 == 3:
                        assert client.map(square, range(5)) == [0, 1, 4, 9, 16]
                    if i % 30 == 11:
                        doomed = client.submit(add, tag, -tag)
                        doomed.cancel()
                    assert client.submit(square, tag + i).result(TIMEOUT) == (tag + i) ** 2
            except BaseException as exc:  # noqa: B902 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(tag * 1000,)) for tag in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT * 4)
        assert not any(thread.is_alive() for thread in threads)
        assert not errors, errors
        assert client._agent.direct_submits > 100, client._agent.direct_submits


def test_a_direct_submit_when_the_scheduler_is_gone_fails_its_future(make_combo):
    """The caller's thread must never write into a connection the I/O thread has closed, nor
    register a future after everything pending was failed: each later submit raises or its
    future fails, none hangs."""
    combo = make_combo(n_workers=1)
    client = Client(combo.get_address(), timeout_seconds=10)
    try:
        assert client.submit(square, 3).result(TIMEOUT) == 9  # stores the function (through the I/O thread)
        assert client.submit(square, 4).result(TIMEOUT) == 16
        assert client._agent.direct_submits >= 1
        combo.shutdown()
        outcomes = []
        for i in range(200):
            try:
                future = client.submit(square, i)
            except Exception as exc:  # the client already knows it is finished
                outcomes.append(type(exc).__name__)
                continue
            try:
                outcomes.append(future.result(TIMEOUT))
            except Exception as exc:
                outcomes.append(type(exc).__name__)
        assert not any(isinstance(outcome, int) and outcome != i * i for i, outcome in enumerate(outcomes))
        assert any(not isinstance(outcome, int) for outcome in outcomes)
    finally:
        client.disconnect()


# --- a worker that runs out of tasks takes over part of another's queue at once ----------

def sleep_then_pid(seconds):
    import time as _time
    _time.sleep(seconds)
    return os.getpid()


def test_a_worker_that_runs_dry_takes_queued_tasks_from_a_busy_one_at_once(make_combo):
    """Both workers get half of a batch; one half is slow. When the fast worker has nothing
    left, the scheduler balances right then (not at its periodic timer, set to 10 minutes
    here): part of the slow worker's queue moves, so the slow tasks end on both workers."""
    combo = make_combo(n_workers=2, load_balance_seconds=600)
    with Client(combo.get_address()) as client:
        pids = set()
        for _ in range(200):  # both workers connected and ready, so the batch below is shared out at once
            pids.update(client.map(sleep_then_pid, [0.01, 0.01]))
            if len(pids) == 2:
                break
        assert len(pids) == 2, "two workers never both ran a task"
        durations = [0.15, 0.005] * 16  # the least-loaded assignment alternates: one worker gets every slow one
        results = client.map(sleep_then_pid, durations)
        slow_on = [pid for pid, seconds in zip(results, durations) if seconds == 0.15]
        assert len(set(slow_on)) == 2, "the slow tasks all ran on one worker: %s" % slow_on


def test_tasks_sent_ahead_to_a_busy_processor_are_asked_back_for_a_worker_that_runs_dry(make_combo, tmp_path):
    """After no-op tasks a worker's pipeline sends up to 64 tasks ahead to its processor, so
    the slow half of the batch is with the processor, not queued, when the other worker runs
    dry. Balancing asks the processor for the ones it has not started: the slow tasks end on
    both workers, and every task runs exactly once (each appends its index to a file)."""
    combo = make_combo(n_workers=2, load_balance_seconds=600)
    log = str(tmp_path / "runs")
    with Client(combo.get_address()) as client:
        pids = set()
        for _ in range(200):
            pids.update(client.map(sleep_then_pid, [0.01, 0.01]))
            if len(pids) == 2:
                break
        assert len(pids) == 2, "two workers never both ran a task"
        client.map(add, range(400), range(400))  # no-op tasks: both pipelines go 64 deep
        durations = [0.15, 0.005] * 16
        results = client.starmap(sleep_log_pid, [(seconds, i, log) for i, seconds in enumerate(durations)])
        slow_on = [pid for pid, seconds in zip(results, durations) if seconds == 0.15]
        assert len(set(slow_on)) == 2, "the slow tasks all ran on one worker: %s" % slow_on
    with open(log) as f:
        assert sorted(int(line) for line in f) == list(range(len(durations)))


def sleep_log_pid(seconds, index, log):
    import time as _time
    _time.sleep(seconds)
    with open(log, "a") as f:
        f.write("%d\n" % index)
    return os.getpid()


def test_a_new_function_submitted_twice_at_once_never_reaches_a_worker_before_it_is_stored(shared_combo):
    """The first submit of a function stores it (through the I/O thread); a second submit
    right behind may be written by the caller's thread, but only once that store is
    acknowledged: no task of these ever fails with MissingObjects."""
    with Client(shared_combo.get_address()) as client:
        futures = []
        for i in range(300):
            def fresh(x, _i=i, _pad=b"p" * (i * 37 % 5000)):  # a new function (and pickle) each time
                return x + _i
            futures.append((client.submit(fresh, 1), i + 1))
            futures.append((client.submit(fresh, 2), i + 2))
        for future, expected in futures:
            assert future.result(TIMEOUT) == expected


def test_a_quick_result_is_not_held_behind_a_slow_task_on_the_same_worker(make_combo):
    """Results leave a worker as they exist (an agent that held results for the ones after
    it was tried, see docs/performance.rst): a slow task queued behind a quick one on the
    same worker must not hold the quick one's result back."""
    combo = make_combo(n_workers=1)
    with Client(combo.get_address()) as client:
        assert client.submit(add, 0, 0).result(TIMEOUT) == 0  # the worker is up and has the function
        for _ in range(3):
            quick = client.submit(add, 1, 2)
            slow = client.submit(sleep_then_pid, 3.0)
            assert quick.result(1.5) == 3
            assert not slow.done()
            slow.result(TIMEOUT)
