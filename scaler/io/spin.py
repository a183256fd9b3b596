"""Poll for a little while before going to sleep, while the answers come back quickly.

A process that sleeps in ``select()`` is woken by the kernel when a peer writes to it; on a
virtual machine whose idle CPUs halt, that wake-up is an interrupt sent between virtual CPUs
through the hypervisor, and it costs tens of microseconds on both sides (measured on the
2-vCPU VM of 2026-12-06: a ``submit(noop).result()`` round trip took ~250 µs, 180 µs with
every process pinned to one CPU; it has four wake-ups on its way, client -> scheduler ->
processor -> scheduler -> client).
A process that is still polling when the message arrives needs no wake-up at all.

So the two waits on a round trip's path that are worth it (the scheduler's loop, the
client's thread waiting in ``result()``) poll with a zero timeout for up to ``budget``
seconds before they sleep, but only while their recent waits ended within the budget (an
exponential average): an idle process, or one whose answers take longer (tasks of a
millisecond and more), sleeps after one budget of polling at most. Between two polls the spinner
yields its CPU (``sched_yield``), so a process that is ready to run there is not kept off it.

What it does not do: a wait that ends just over the budget never starts the polling (its
average stays above), and when activity stops, the first wait still polls for a budget
before it sleeps. Within a process the poller holds the GIL between two polls (on 3.8 and
3.9 ``sched_yield`` does not even release it), so another thread of the same process (the
client's I/O thread) may wait up to one budget longer for it. Where ``os.sched_yield`` is
missing (not Linux, not BSD) nothing polls.

``SCALER_SPIN_MICROSECONDS`` in the environment sets the budget; 0 turns spinning off.
"""

import os
import time
from typing import Any, Callable, Optional

ENV = "SCALER_SPIN_MICROSECONDS"
DEFAULT_MICROSECONDS = 250
WEIGHT = 0.25  # of the newest wait in the average
LONG_WAIT = 4  # a wait counts for at most this many budgets (one long pause is not remembered for ever)

_yield: Optional[Callable[[], Any]] = getattr(os, "sched_yield", None)


def configured_budget() -> float:
    """The budget in seconds that the environment asks for (the default if unset or invalid;
    0 where the CPU cannot be yielded between polls)."""
    if _yield is None:
        return 0.0
    text = os.environ.get(ENV, "").strip()
    try:
        micros = float(text) if text else DEFAULT_MICROSECONDS
    except ValueError:
        micros = DEFAULT_MICROSECONDS
    return max(0.0, min(micros, 10000.0)) / 1e6


def _no_yield() -> None:
    pass


class Spinner:
    """When to poll before sleeping, and the polling itself."""

    __slots__ = ("budget", "average", "enabled")

    def __init__(self, budget: Optional[float] = None) -> None:
        self.budget = configured_budget() if budget is None else budget
        self.average = self.budget * LONG_WAIT  # until waits have been seen: as if they were long
        self.enabled = True  # the owner's own condition (the scheduler: not while every worker has work)

    def worth_it(self) -> bool:
        return self.enabled and self.average < self.budget

    def waited(self, seconds: float) -> None:
        """One wait took ``seconds`` until something arrived (or it timed out)."""
        self.average += (min(seconds, self.budget * LONG_WAIT) - self.average) * WEIGHT

    def spin(self, poll_now: Callable[[], Any], limit: Optional[float] = None) -> Any:
        """Call ``poll_now`` (a poll with a zero timeout) until it returns something, the
        budget is spent or ``limit`` seconds have passed (a timer due sooner); returns its
        last answer (empty if nothing came)."""
        clock = time.perf_counter
        end = clock() + (self.budget if limit is None else min(limit, self.budget))
        give_way = _yield or _no_yield
        while True:
            ready = poll_now()
            if ready or clock() >= end:
                return ready
            give_way()


__all__ = ["ENV", "Spinner", "configured_budget"]
