"""While every worker has its next task at hand, the scheduler's thread runs under Linux's
``SCHED_BATCH`` policy; otherwise the normal one.

Why: when every CPU is busy running tasks, a processor that ends a task wakes the scheduler
with the result, and under the normal policy the woken scheduler preempts a running
processor at once, which then waits the scheduler's whole turn before it goes on. Under
``SCHED_BATCH`` the scheduler still gets its fair share of CPU (same nice value, same
weight), but its wake-up no longer preempts: it runs when a CPU frees up or the running
task's slice ends, and by then it usually finds several results to handle in one turn.
That is only right while each worker's processor has its next task in hand (the worker's
pipeline holds two tasks or more: the running one and the next): a worker short of work
waits on the scheduler's turn, and preempting is what makes it short. So the scheduler
switches policy as the pipelines fill and empty (a system call per switch, not per task).
See "Worker = agent + processor" in ``docs/architecture.rst`` for measurements.

Until 2026-12-06 the worker's agent, which then relayed every task and result, did this
for itself; with the agent off a task's way the scheduler is the process woken per result.

Only the thread that switches is affected: the scheduler's loop thread. A scheduler an
operator started under another policy than ``SCHED_OTHER`` (``chrt``), or switched while
it runs, is left as it is. ``SCALER_SCHED_BATCH=0`` (or the older
``SCALER_AGENT_SCHED_BATCH=0``) in its environment turns this off. An unprivileged process
may move its threads between ``SCHED_OTHER`` and ``SCHED_BATCH`` (sched(7)); where the call
is missing (not Linux) or refused, nothing changes.
"""

import os

ENV = "SCALER_SCHED_BATCH"
OLD_ENV = "SCALER_AGENT_SCHED_BATCH"
LINED_UP = 2  # tasks a worker's pipeline holds (the running one included) for it to have its next at hand


def _wanted() -> bool:
    return all(os.environ.get(name, "").strip().lower() not in ("0", "false", "no", "off") for name in (ENV, OLD_ENV))


class BatchPolicy:
    """The scheduling policy of the calling thread: ``SCHED_BATCH`` while :meth:`set` says so."""

    __slots__ = ("enabled", "batch")

    def __init__(self) -> None:
        self.batch = False
        self.enabled = False
        if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH") and _wanted():
            try:
                self.enabled = os.sched_getscheduler(0) == os.SCHED_OTHER  # else: chosen for us, kept
            except OSError:
                pass

    def set(self, batch: bool) -> None:
        if batch is self.batch or not self.enabled:
            return
        try:
            # An operator may have chosen a policy since (chrt -p): theirs is kept from then on.
            if os.sched_getscheduler(0) != (os.SCHED_BATCH if self.batch else os.SCHED_OTHER):
                self.enabled = False
                return
            os.sched_setscheduler(0, os.SCHED_BATCH if batch else os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            if batch:
                self.enabled = False  # refused here: stay as we are, and stop asking
            # (refused on the way back, by something outside, seccomp or reset-on-fork: we stay
            # enabled and under SCHED_BATCH, and ask again at the next change)
            return
        self.batch = batch


__all__ = ["ENV", "LINED_UP", "BatchPolicy"]
