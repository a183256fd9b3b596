"""Polling before sleeping (io/spin.py): when it is worth it, how long it lasts, and the
event loop's use of it."""

import selectors
import socket
import threading
import time

import pytest

from scaler.io import spin
from scaler.io.loop import EventLoop
from scaler.io.spin import Spinner


def test_a_new_spinner_waits_for_short_waits_before_it_spins():
    spinner = Spinner(0.001)
    assert not spinner.worth_it()  # nothing seen yet: as if waits were long
    for _ in range(8):
        spinner.waited(0.0001)
    assert spinner.worth_it()


def test_one_long_wait_stops_the_spinning_and_a_few_short_ones_bring_it_back():
    spinner = Spinner(0.001)
    for _ in range(20):
        spinner.waited(0.0001)
    spinner.waited(30.0)  # a pause of the user's: counted as a few budgets, not thirty seconds
    assert not spinner.worth_it()
    assert spinner.average <= spinner.budget * spin.LONG_WAIT
    short = 0
    while not spinner.worth_it():
        spinner.waited(0.0001)
        short += 1
    assert short <= 6


def test_waits_that_end_beyond_the_budget_keep_it_from_spinning():
    spinner = Spinner(0.001)
    for _ in range(50):
        spinner.waited(0.0015)  # tasks of a millisecond and a half: polling would only burn CPU
    assert not spinner.worth_it()


def test_a_disabled_spinner_never_spins():
    spinner = Spinner(0.001)
    for _ in range(20):
        spinner.waited(0.0)
    spinner.enabled = False
    assert not spinner.worth_it()


def test_spin_returns_as_soon_as_the_poll_answers():
    answers = [[], [], ["ready"]]
    calls = []

    def poll_now():
        calls.append(1)
        return answers[len(calls) - 1]

    assert Spinner(5.0).spin(poll_now) == ["ready"]
    assert len(calls) == 3


def test_spin_gives_up_once_the_budget_is_spent():
    calls = []
    started = time.perf_counter()
    assert Spinner(0.05).spin(lambda: calls.append(1) or []) == []
    assert time.perf_counter() - started >= 0.05
    assert len(calls) > 1


def test_spin_stops_at_a_limit_sooner_than_the_budget():
    calls = []
    assert Spinner(5.0).spin(lambda: calls.append(1) or [], limit=0) == []
    assert len(calls) == 1


@pytest.mark.parametrize("text, expected", [("", spin.DEFAULT_MICROSECONDS / 1e6), ("0", 0.0), ("50", 50e-6),
                                            ("not a number", spin.DEFAULT_MICROSECONDS / 1e6),
                                            ("-3", 0.0), ("1e9", 0.01)])
def test_the_budget_comes_from_the_environment(monkeypatch, text, expected):
    monkeypatch.setenv(spin.ENV, text)
    assert spin.configured_budget() == pytest.approx(expected)
    assert Spinner().budget == pytest.approx(expected)


class _Recording(Spinner):
    """Notes each spin's limit; raises if spinning is forbidden."""

    def __init__(self, budget, forbidden=False):
        super().__init__(budget)
        self.limits = []
        self.answers = []
        self.forbidden = forbidden
        for _ in range(10):
            self.waited(0.0)

    def spin(self, poll_now, limit=None):
        if self.forbidden:
            raise AssertionError("a loop with a lock spun")
        self.limits.append(limit)
        answer = super().spin(poll_now, limit)
        self.answers.append(answer)
        return answer


def _loop_with_spinner(budget, forbidden=False):
    loop = EventLoop()
    loop.spinner = _Recording(budget, forbidden)
    return loop


def test_a_spinning_loop_takes_a_message_sent_while_it_polls():
    loop = _loop_with_spinner(5.0)
    a, b = socket.socketpair()
    received = []

    def on_read(_mask):
        received.append(a.recv(10))
        loop.stop()

    loop.add(a, selectors.EVENT_READ, on_read)
    sender = threading.Timer(0.02, lambda: b.send(b"x"))
    sender.start()
    try:
        loop.call_later(10.0, loop.stop)  # a net: the test fails on the assertion, not by hanging
        loop.run()
    finally:
        sender.cancel()
        loop.close()
        a.close()
        b.close()
    assert received == [b"x"]
    limits = loop.spinner.limits
    assert limits and limits[0] is not None and limits[0] > 9.0  # it spun, limited by the timer's distance
    assert [bool(answer) for answer in loop.spinner.answers] == [True]  # and the poll, not a sleep, took it


def test_a_spinning_loop_still_runs_a_timer_due_before_its_budget_ends():
    loop = _loop_with_spinner(5.0)
    fired = []
    loop.call_later(0.5, lambda: (fired.append(time.monotonic()), loop.stop()))
    net = loop.call_later(3.0, loop.stop)
    started = time.monotonic()
    loop.run()
    net.cancel()
    loop.close()
    # Not held for the 5 s budget, nor for its delay twice over (a spin up to the timer, then
    # a sleep for the whole delay again).
    assert fired and 0.5 <= fired[0] - started < 0.9


def test_a_loop_lent_to_other_threads_does_not_spin():
    loop = _loop_with_spinner(5.0, forbidden=True)
    loop.lock = threading.Lock()
    loop.lock.acquire()  # held by the loop's thread for everything but its select()
    loop.call_later(0.02, loop.stop)
    loop.run()
    loop.lock.release()
    loop.close()


def test_a_zero_budget_turns_the_client_leaders_spinning_off(monkeypatch):
    from scaler.client.leader import Leader

    monkeypatch.setenv(spin.ENV, "0")
    assert Leader(None)._spinner is None  # type: ignore[arg-type]
    monkeypatch.setenv(spin.ENV, "100")
    spinner = Leader(None)._spinner  # type: ignore[arg-type]
    assert spinner is not None and spinner.budget == pytest.approx(100e-6)


def test_without_sched_yield_nothing_polls(monkeypatch):
    monkeypatch.setattr(spin, "_yield", None)
    monkeypatch.setenv(spin.ENV, "250")
    assert spin.configured_budget() == 0.0
