"""The event loop on its own: cross-thread wake-ups, timers."""

import threading
import time

from scaler.io.loop import EventLoop


def test_every_threadsafe_call_wakes_the_loop_even_under_contention():
    # Regression: clearing the wake flag before draining the wake socket could swallow a
    # wake-up for good, after which calls waited for the next timer.
    loop = EventLoop()
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        for round_ in range(300):
            done = threading.Event()
            burst = [threading.Thread(target=lambda: [loop.call_soon_threadsafe(lambda: None) for _ in range(20)])
                     for _ in range(3)]
            for t in burst:
                t.start()
            for t in burst:
                t.join()
            loop.call_soon_threadsafe(done.set)
            # With no timers registered a lost wake-up would block forever.
            assert done.wait(10), "wake-up lost in round %d" % round_
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_timers_run_in_order_and_can_be_cancelled():
    loop = EventLoop()
    seen = []
    loop.call_later(0.02, lambda: seen.append("b"))
    loop.call_later(0.01, lambda: seen.append("a"))
    cancelled = loop.call_later(0.015, lambda: seen.append("x"))
    cancelled.cancel()
    ticks = []
    repeating = loop.call_every(0.005, lambda: ticks.append(time.monotonic()))
    loop.call_later(0.05, loop.stop)
    loop.run()
    repeating.cancel()
    loop.close()
    assert seen == ["a", "b"]
    assert len(ticks) >= 3


def test_a_lent_socket_is_not_watched_and_comes_back_with_the_events_last_asked_for():
    import selectors
    import socket

    loop = EventLoop()
    a, b = socket.socketpair()
    try:
        calls = []
        first = lambda mask: calls.append(("first", mask))  # noqa: E731
        second = lambda mask: calls.append(("second", mask))  # noqa: E731
        loop.add(a, selectors.EVENT_READ, first)
        told = []
        assert loop.suspend(a, lambda: told.append(1))
        assert loop.lent_events(a)[:2] == [selectors.EVENT_READ, first]
        b.send(b"x")
        loop.call_later(0.05, loop.stop)
        loop.run()
        assert calls == []  # lent: the loop does not watch it
        assert told == []
        loop.modify(a, selectors.EVENT_READ | selectors.EVENT_WRITE, second)  # the owner changes its mind meanwhile
        assert told == [1]  # the borrower is told: it may be polling for the old events
        assert loop.lent_events(a)[:2] == [selectors.EVENT_READ | selectors.EVENT_WRITE, second]
        loop.resume(a)
        assert loop.lent_events(a) is None
        loop.call_later(0.05, loop.stop)
        loop.run()
        assert calls and calls[0] == ("second", selectors.EVENT_READ | selectors.EVENT_WRITE)
        assert not loop.suspend(b)  # never registered
        assert loop.suspend(a, lambda: told.append(2))
        loop.remove(a)  # closed while lent: the loan ends, there is nothing to give back
        assert told == [1, 2]
        assert loop.lent_events(a) is None
        loop.resume(a)
        try:
            loop.selector.get_key(a)
            registered = True
        except KeyError:
            registered = False
        assert not registered
    finally:
        loop.close()
        a.close()
        b.close()


def test_a_loop_with_a_lock_holds_it_but_while_it_waits():
    loop = EventLoop()
    loop.lock = threading.Lock()
    held_in_callbacks = []
    taken_while_waiting = threading.Event()

    def run():
        loop.lock.acquire()
        try:
            loop.run()
        finally:
            loop.lock.release()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert loop.lock.acquire(timeout=10)  # the loop waits in select(): it let go
        taken_while_waiting.set()
        loop.call_soon_threadsafe(lambda: held_in_callbacks.append(loop.lock.locked()))
        time.sleep(0.05)
        assert held_in_callbacks == []  # it cannot run a callback while another thread holds the lock
        loop.lock.release()
        deadline = time.monotonic() + 10
        while not held_in_callbacks and time.monotonic() < deadline:
            time.sleep(0.01)
        assert held_in_callbacks == [True]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
