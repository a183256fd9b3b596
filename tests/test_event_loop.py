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
