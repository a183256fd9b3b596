"""ScalerFuture against the concurrent.futures machinery, without a cluster."""

import concurrent.futures
import threading

from scaler.client.future import ScalerFuture


def test_wait_returns_for_a_future_cancelled_before_the_wait():
    future = ScalerFuture(b"t" * 16)
    assert future.cancel() is True
    done, not_done = concurrent.futures.wait([future], timeout=5)
    assert done == {future} and not not_done
    assert list(concurrent.futures.as_completed([future], timeout=5)) == [future]


def test_wait_wakes_when_a_future_is_cancelled_during_the_wait():
    future = ScalerFuture(b"t" * 16)
    threading.Timer(0.05, future.cancel).start()
    done, _ = concurrent.futures.wait([future], timeout=5)
    assert done == {future} and future.cancelled()


def test_cancel_is_truthful_and_tells_the_scheduler_once():
    told = []
    future = ScalerFuture(b"t" * 16, canceller=told.append)
    assert future.cancel() and future.cancelled() and future.done()
    assert future.cancel() is False  # already done
    assert told == [b"t" * 16]
    finished = ScalerFuture(b"u" * 16)
    finished.set_result(1)
    assert finished.cancel() is False and not finished.cancelled()


def test_task_duration_counts_from_submission_to_the_end():
    import time

    import pytest

    future = ScalerFuture(b"t" * 16)
    with pytest.raises(ValueError, match="not done"):
        future.task_duration()
    time.sleep(0.05)
    future.set_result(3)
    first = future.task_duration()
    assert 0.05 <= first < 5 and future.task_duration() == first  # fixed once done
    failed = ScalerFuture(b"u" * 16)
    failed.set_exception(ValueError("x"))
    cancelled = ScalerFuture(b"v" * 16)
    cancelled.cancel()
    assert failed.task_duration() >= 0 and cancelled.task_duration() >= 0
