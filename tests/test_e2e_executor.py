"""ScalerExecutor / client.executor(): concurrent.futures.Executor semantics on a real cluster."""

import concurrent.futures
import time

import pytest

from scaler import Client, ScalerExecutor

TIMEOUT = 60


def square(x):
    return x * x


def add(a, b):
    return a + b


def nap(seconds):
    time.sleep(seconds)
    return seconds


def fails(x):
    raise ValueError("bad %d" % x)


def test_code_for_processpoolexecutor_runs_by_changing_one_line(shared_combo):
    with ScalerExecutor(shared_combo.get_address()) as pool:   # was: ProcessPoolExecutor()
        assert isinstance(pool, concurrent.futures.Executor)
        future = pool.submit(add, 2, b=3)
        assert future.result(timeout=TIMEOUT) == 5
        assert list(pool.map(square, range(10))) == [x * x for x in range(10)]
        assert list(pool.map(add, range(5), range(5, 10))) == [5, 7, 9, 11, 13]
        done, _ = concurrent.futures.wait([pool.submit(square, i) for i in range(20)], timeout=TIMEOUT)
        assert sorted(f.result() for f in done) == sorted(i * i for i in range(20))
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(square, 1)
    assert pool.client._stopped  # an executor made from an address closes its client


def test_chunksize_sends_calls_in_batches_and_keeps_the_order(client):
    pool = client.executor()
    assert list(pool.map(square, range(1001), chunksize=100)) == [x * x for x in range(1001)]
    with pytest.raises(ValueError, match="chunksize"):
        pool.map(square, range(3), chunksize=0)
    pool.shutdown()
    assert client.submit(square, 3).result(timeout=TIMEOUT) == 9  # the client's own executor leaves it open


def test_map_is_lazy_and_raises_in_order(client):
    pool = client.executor()
    results = pool.map(lambda x: 10 // x, [5, 2, 0, 1])
    assert next(results) == 2 and next(results) == 5
    with pytest.raises(ZeroDivisionError):
        next(results)


def test_map_timeout_counts_from_the_call(client):
    pool = client.executor()
    results = pool.map(nap, [0.0, 30.0], timeout=1.0)
    assert next(results) == 0.0
    with pytest.raises(concurrent.futures.TimeoutError):
        next(results)


def test_shutdown_waits_or_cancels(client):
    pool = client.executor()
    waited = [pool.submit(nap, 0.2) for _ in range(3)]
    pool.shutdown(wait=True)
    assert all(f.done() and f.result() == 0.2 for f in waited)
    pool = client.executor()
    blockers = [pool.submit(nap, 30) for _ in range(8)]
    pool.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in blockers) and any(f.cancelled() for f in blockers)


def test_an_address_and_a_client_together_are_refused(client):
    with pytest.raises(TypeError):
        ScalerExecutor("tcp://127.0.0.1:1", client=client)
