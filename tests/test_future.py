"""ScalerFuture against the concurrent.futures machinery, without a cluster."""

import concurrent.futures
import threading
import time

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


def _identity(payload):
    return payload


def test_a_future_nobody_waits_on_never_makes_a_condition():
    """100 000 tasks in flight are 100 000 futures: each must stay small (no Condition, no
    instance dict) from submit to its result being read."""
    future = ScalerFuture(b"t" * 16)
    future._set_payload(b"x", lambda payload: payload.decode())
    assert future.done() and not future.cancelled() and not future.running()
    assert future.result() == "x" and future.result() == "x" and future.exception() is None
    assert future._cond is None
    assert not getattr(future, "__dict__", {})


def test_result_waits_and_wakes_whichever_side_comes_first():
    """The I/O thread finishes futures without a Condition unless a waiter made one: a waiter
    arriving at any moment of that must never miss the wake-up."""
    for i in range(2000):
        future = ScalerFuture(b"t" * 16)
        got = []
        waiter = threading.Thread(target=lambda: got.append(future.result(timeout=10)))
        if i % 2:
            waiter.start()
            future._set_payload(i, _identity)
        else:
            future._set_payload(i, _identity)
            waiter.start()
        waiter.join(15)
        assert got == [i]


def test_callbacks_wait_and_as_completed_see_a_future_finished_without_a_condition():
    futures = [ScalerFuture(bytes([i]) * 16) for i in range(20)]
    seen = []
    futures[0].add_done_callback(lambda f: seen.append(f.result()))
    timer = threading.Timer(0.05, lambda: [f._set_payload(i, _identity) for i, f in enumerate(futures)])
    timer.start()
    done, not_done = concurrent.futures.wait(futures, timeout=10)
    assert len(done) == 20 and not not_done
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=10)) == list(range(20))
    assert seen == [0]
    late = []
    futures[1].add_done_callback(lambda f: late.append(f.result()))  # already done: runs at once
    assert late == [1]
    timer.join()


def test_a_cancelled_future_refuses_its_result_and_a_finished_one_its_cancel():
    cancelled = ScalerFuture(b"c" * 16)
    assert cancelled.cancel()
    try:
        cancelled._set_payload(b"late", _identity)
    except concurrent.futures.InvalidStateError:
        pass
    else:
        raise AssertionError("a cancelled future accepted a result")
    finished = ScalerFuture(b"f" * 16)
    finished._set_payload(b"x", _identity)
    assert finished.cancel() is False and finished.result() == b"x"


def test_wait_all_returns_once_every_future_is_done_whichever_way_each_ends():
    """wait_all (what Client.map waits on) counts futures finished by the I/O thread's two
    paths (with and without a Condition) and by cancel, done before or during the wait."""
    from scaler.client.future import wait_all

    futures = [ScalerFuture(b"%016d" % i) for i in range(3000)]
    futures[0]._set_payload(b"early", bytes)  # done before the wait
    futures[1].add_done_callback(lambda f: None)  # has a Condition: finished through set_result
    seen = []

    def finish():
        for future in futures[1:]:
            future._set_payload(b"x", bytes)
            seen.append(future)

    threading.Timer(0.02, finish).start()
    wait_all(futures, slice_seconds=0.05)
    assert len(seen) == 2999 and all(f.done() for f in futures)
    assert futures[1].result() == b"x" and futures[0].result() == b"early"


def test_wait_all_wakes_as_soon_as_one_future_fails_or_is_cancelled():
    from scaler.client.future import wait_all

    for end in (lambda f: f.set_exception(ValueError("boom")), lambda f: f.cancel()):
        futures = [ScalerFuture(b"%016d" % i) for i in range(10)]
        threading.Timer(0.02, end, args=(futures[7],)).start()
        wait_all(futures, slice_seconds=0.05)  # the others never end: it must not wait for them
        assert futures[7].done() and not futures[0].done()


def test_wait_all_does_not_miss_a_future_that_ends_while_it_registers():
    """Futures ending concurrently with the registration are counted exactly once (a miss
    would wait forever: the test would time out in its thread)."""
    from scaler.client.future import wait_all

    for _ in range(20):
        futures = [ScalerFuture(b"%016d" % i) for i in range(5000)]
        for future in futures[::3]:
            future.add_done_callback(lambda f: None)  # a third with a Condition
        finisher = threading.Thread(target=lambda: [f._set_payload(b"v", bytes) for f in futures])
        waiter = threading.Thread(target=wait_all, args=(futures,), kwargs={"slice_seconds": 0.05})
        finisher.start()
        waiter.start()
        waiter.join(10)
        finisher.join(10)
        assert not waiter.is_alive()


def test_two_waits_on_the_same_futures_both_return():
    """A future's one wait slot may already be held (another thread's wait_all, or a thread
    leading on it): the second waiter must not take it over, and neither may hang."""
    from scaler.client.future import wait_all

    futures = [ScalerFuture(b"%016d" % i) for i in range(50)]
    waiters = [threading.Thread(target=wait_all, args=(futures[:40],), kwargs={"slice_seconds": 0.05}, daemon=True),
               threading.Thread(target=wait_all, args=(futures[10:],), kwargs={"slice_seconds": 0.05}, daemon=True)]
    for waiter in waiters:
        waiter.start()
        time.sleep(0.05)  # the first holds the slots of 0-39 when the second registers
    for future in futures:
        future._set_payload(b"v", bytes)
    for waiter in waiters:
        waiter.join(10)
    assert not any(waiter.is_alive() for waiter in waiters)


def test_wait_all_sees_a_failure_among_the_futures_another_waiter_watches():
    from scaler.client.future import wait_all

    futures = [ScalerFuture(b"%016d" % i) for i in range(5)]
    other = threading.Thread(target=wait_all, args=(futures[:3],), kwargs={"slice_seconds": 0.05}, daemon=True)
    other.start()
    time.sleep(0.05)
    threading.Timer(0.05, futures[1].set_exception, args=(ValueError("boom"),)).start()
    wait_all(futures, slice_seconds=0.05)  # futures 3 and 4 never end: the failure must end the wait
    other.join(10)
    assert futures[1].done() and not futures[4].done() and not other.is_alive()


def _critical_records(action):
    """What ``action`` logs on ``concurrent.futures``' logger (which prints CRITICAL records
    to stderr through logging's last-resort handler when nothing is configured)."""
    import logging

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("concurrent.futures")
    handler = Keep(level=logging.DEBUG)
    logger.addHandler(handler)
    try:
        action()
    finally:
        logger.removeHandler(handler)
    return [r.getMessage() for r in records]


def test_the_io_thread_cancelling_an_already_cancelled_future_logs_nothing():
    # A client that closes while its user's cancels are still on their way, or hears the
    # scheduler confirm a cancel, ends those futures again: that must be silent, not a
    # "Future ... in unexpected state: CANCELLED_AND_NOTIFIED" line per future on stderr.
    told = []
    future = ScalerFuture(b"t1", told.append)
    assert future.cancel()
    assert _critical_records(lambda: future._cancel_here()) == []
    assert future._cancel_here() is True  # still a cancelled future
    assert future._state == concurrent.futures._base.CANCELLED_AND_NOTIFIED
    assert told == [b"t1"]
    done, _ = concurrent.futures.wait([future], timeout=1)
    assert done == {future}


def test_cancelling_from_two_threads_at_once_confirms_once_and_logs_nothing():
    # The user's cancel() and the I/O thread's _cancel_here() (a close, or the scheduler's
    # word) on the same futures, from opposite ends of the list so that they meet.
    def rounds():
        for _ in range(50):
            futures = [ScalerFuture(b"t%d" % i) for i in range(200)]
            waiter = threading.Thread(target=concurrent.futures.wait, args=(futures,), kwargs={"timeout": 5})
            waiter.start()
            start = threading.Barrier(2)

            def io_thread_side():
                start.wait()
                for f in reversed(futures):
                    f._cancel_here()

            other = threading.Thread(target=io_thread_side)
            other.start()
            start.wait()
            for f in futures:
                f.cancel()
            other.join(5)
            waiter.join(5)
            assert not waiter.is_alive() and not other.is_alive()
            assert all(f._state == concurrent.futures._base.CANCELLED_AND_NOTIFIED for f in futures)

    assert _critical_records(rounds) == []


def test_task_duration_is_known_to_the_done_callbacks_of_a_cancelled_future():
    future = ScalerFuture(b"t", lambda task_id: None)
    seen = []
    future.add_done_callback(lambda f: seen.append(f.task_duration()))
    assert future.cancel()
    assert len(seen) == 1 and seen[0] >= 0
    inside = ScalerFuture(b"u")  # cancelled by the client's I/O thread (the scheduler ended it)
    inside.add_done_callback(lambda f: seen.append(f.task_duration()))
    assert inside._cancel_here()
    assert len(seen) == 2 and seen[1] >= 0


def test_a_payload_arriving_for_a_cancelled_future_is_not_kept():
    """A result in shared memory holds a descriptor until it is dropped: a future cancelled
    while its result was fetched must not keep it (with or without a Condition made)."""
    import weakref
    from concurrent.futures import InvalidStateError

    class Payload:
        pass

    for make_condition in (False, True):
        future = ScalerFuture(b"task")
        if make_condition:
            future.add_done_callback(lambda f: None)
        assert future.cancel()
        payload = Payload()
        alive = weakref.ref(payload)
        try:
            future._set_payload(payload, lambda p: p)
        except InvalidStateError:
            pass
        del payload
        assert alive() is None, make_condition
