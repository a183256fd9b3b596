"""More of the Client's public API end to end: serializers, clear, shutdown, nesting, asyncio."""

import asyncio
import concurrent.futures
import json
import os

import pytest

from scaler import Client, ScalerFuture, Serializer
from scaler.client.object_reference import ObjectReference
from scaler.utility.exceptions import ClientQuitException, ClientShutdownException, MissingObjects

TIMEOUT = 60


class JsonSerializer(Serializer):
    """A custom serializer: functions still need cloudpickle, so it wraps both."""

    @staticmethod
    def serialize(obj):
        import cloudpickle
        if isinstance(obj, (list, dict, int, str)) or obj is None:
            return b"J" + json.dumps(obj).encode()
        return b"P" + cloudpickle.dumps(obj)

    @staticmethod
    def deserialize(payload):
        import cloudpickle
        payload = bytes(payload)
        return json.loads(payload[1:]) if payload[:1] == b"J" else cloudpickle.loads(payload[1:])


def total(values, scale=1):
    return sum(values) * scale


def worker_pid(_=None):
    return os.getpid()


def nested_sum(n):
    # No address: inside a task the client joins the scheduler that runs it.
    with Client() as inner:
        return sum(inner.map(lambda x: x * 2, range(n)))


def test_a_custom_serializer_is_used_both_ways(shared_combo):
    with Client(shared_combo.get_address(), serializer=JsonSerializer()) as client:
        assert client.submit(total, [1, 2, 3], scale=2).result(timeout=TIMEOUT) == 12
        ref = client.send_object([4, 5])
        assert client.submit(total, ref).result(timeout=TIMEOUT) == 9
        assert client.map(total, [[1], [2, 3]]) == [1, 5]


def test_identity_address_and_future_types(client, shared_combo):
    assert client.identity.startswith(b"Client|")
    assert client.scheduler_address == shared_combo.get_address()
    future = client.submit(total, [1])
    assert isinstance(future, ScalerFuture) and isinstance(future, concurrent.futures.Future)
    assert len(future.task_id) == 16
    done, _ = concurrent.futures.wait([future], timeout=TIMEOUT)
    assert done == {future} and future.result() == 1


def test_asyncio_can_await_a_scaler_future(client):
    async def main():
        return await asyncio.wrap_future(client.submit(total, [20, 22]))

    assert asyncio.run(main()) == 42


def test_task_duration_covers_the_time_the_task_took(client):
    import time
    future = client.submit(time.sleep, 0.3)
    with pytest.raises(ValueError):
        future.task_duration()
    future.result(timeout=TIMEOUT)
    assert 0.3 <= future.task_duration() < TIMEOUT


def test_clear_deletes_objects_and_old_references_fail(shared_combo):
    with Client(shared_combo.get_address()) as client:
        ref = client.send_object([1, 2, 3])
        assert isinstance(ref, ObjectReference) and ref.size > 0
        assert client.submit(total, ref).result(timeout=TIMEOUT) == 6
        client.clear()
        with pytest.raises(MissingObjects):
            client.submit(total, ref)
        assert client.submit(total, [1, 1]).result(timeout=TIMEOUT) == 2  # still usable


def test_a_disconnected_client_refuses_work(shared_combo):
    client = Client(shared_combo.get_address())
    client.disconnect()
    client.disconnect()  # idempotent
    with pytest.raises(ClientQuitException):
        client.submit(total, [1])


def test_a_client_without_address_outside_a_worker_says_so(monkeypatch):
    monkeypatch.delenv("SCALER_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="No scheduler address provided"):
        Client()


def test_tasks_can_submit_tasks(client):
    assert client.submit(nested_sum, 10).result(timeout=TIMEOUT) == 90


def test_a_protected_scheduler_refuses_shutdown(client):
    with pytest.raises(ValueError, match="protected"):
        client.shutdown()
    assert client.submit(total, [3]).result(timeout=TIMEOUT) == 3


def test_an_unprotected_scheduler_shuts_down_for_a_client(make_combo):
    combo = make_combo(n_workers=1, protected=False)
    observer = Client(combo.get_address())
    try:
        with Client(combo.get_address()) as client:
            assert client.submit(total, [1]).result(timeout=TIMEOUT) == 1
            client.shutdown()
        # Everybody else learns it at once instead of waiting for a timeout.
        with pytest.raises((ClientShutdownException, ClientQuitException)):
            observer.submit(worker_pid).result(timeout=TIMEOUT)
        assert combo._scheduler.popen.wait(TIMEOUT) == 0
    finally:
        observer.disconnect()


def sleep_then(seconds):
    import time
    time.sleep(seconds)
    return seconds


def test_custom_serializers_get_bytes_even_for_big_payloads(shared_combo):
    big = list(range(100000))  # > 64 KiB of JSON both ways
    with Client(shared_combo.get_address(), serializer=JsonSerializer()) as client:
        assert client.submit(total, big).result(timeout=TIMEOUT) == sum(big)
        assert client.submit(list, big).result(timeout=TIMEOUT) == big


def test_a_result_is_not_held_back_by_the_next_task(make_combo):
    combo = make_combo(n_workers=1)
    with Client(combo.get_address()) as client:
        client.map(sleep_then, [0] * 50)  # teach the worker that tasks are short
        futures = client.map_futures(sleep_then, [0, 0, 5])
        assert futures[1].result(timeout=TIMEOUT) == 0
        assert not futures[2].done()  # the quick results came back while the slow task runs
        futures[2].cancel()


def test_scheduler_and_cluster_classes_start_and_stop_their_processes():
    from scaler import Cluster, Scheduler
    from scaler.io.address import free_tcp_port

    address = "tcp://127.0.0.1:%d" % free_tcp_port(count=3)
    scheduler = Scheduler(address=address, logging_level="WARNING")
    cluster = Cluster(address, n_workers=2, logging_level="WARNING")
    scheduler.start()
    cluster.start()
    try:
        assert scheduler.is_alive() and cluster.is_alive() and cluster.pid != scheduler.pid
        with Client(address) as client:
            assert len(set(client.map(worker_pid, range(200)))) >= 1
            assert client.submit(total, [2, 3]).result(timeout=TIMEOUT) == 5
    finally:
        cluster.shutdown()
        scheduler.shutdown()
    assert cluster.exitcode == 0 and scheduler.exitcode == 0
    assert not cluster.is_alive() and not scheduler.is_alive()


# --- drop-in details ----------------------------------------------------------------------------

def test_await_a_future_and_cancel_with_a_timeout(client):
    import asyncio

    async def both():
        return await client.submit(pow, 2, 5), await client.submit(pow, 3, 2)

    assert asyncio.run(both()) == (32, 9)
    future = client.submit(pow, 2, 2)
    future.result(timeout=60)
    assert future.cancel(timeout=1.0) is False  # done already: upstream's signature, a truthful answer


def test_every_command_names_itself_in_version():
    import subprocess
    import sys
    for module, prog in (("scaler.scheduler", "scaler_scheduler"), ("scaler.cluster", "scaler_cluster"),
                         ("scaler.top", "scaler_top"), ("scaler", "scaler")):
        out = subprocess.run([sys.executable, "-m", module, "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=60).stdout.decode()
        assert out.startswith(prog + " "), (module, out)


def test_the_launcher_names_an_unknown_flag_and_takes_dash_c(tmp_path):
    import subprocess
    import sys
    bogus = subprocess.run([sys.executable, "-m", "scaler", "--bogus"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
    assert bogus.returncode == 2 and b"unrecognized arguments: --bogus" in bogus.stdout
    missing = subprocess.run([sys.executable, "-m", "scaler"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=60)
    assert missing.returncode == 2 and b"CONFIG.toml" in missing.stdout
    path = tmp_path / "c.toml"
    path.write_text('[scheduler]\nscheduler_address = "tcp://127.0.0.1:8516"\n')
    for args in (["-c", str(path)], ["--config", str(path)], [str(path)]):
        checked = subprocess.run([sys.executable, "-m", "scaler", "--check"] + args, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, timeout=60)
        assert checked.returncode == 0 and b"would start scheduler" in checked.stdout, checked.stdout


def test_the_scheduler_logs_a_short_unique_client_id():
    from scaler.scheduler.state import short_id
    first, second = b"Client|" + b"1a2b3c4d5e6f7a8b" * 2, b"Client|" + b"9f8e7d6c5b4a3210" * 2
    assert short_id(first) == "1a2b3c4d5e6f" and short_id(second) == "9f8e7d6c5b4a"
    assert short_id(b"\x00\xff" * 8) == "00ff00ff00ff"
