"""While its processor has tasks lined up, a worker agent runs under Linux's ``SCHED_BATCH``
policy; otherwise, and always for the processor that runs user code, the normal one.

Why: when every CPU is busy running tasks, a processor that ends a task wakes its agent
with the result, and under the normal policy the agent, having slept, preempts a running
processor at once — very often its own, on the CPU it was just woken from, which then
waits the agent's whole turn before it starts its next task. Under ``SCHED_BATCH`` the
agent still gets its fair share of CPU (same nice value, same weight), but its wake-up no
longer preempts: it runs when a CPU frees up or the running task's slice ends, and by then
it usually finds several results to forward in one turn. That is only right while the
processor has its next task at hand: with nothing lined up, the agent's turn is what the
next task (or the one result someone waits for) waits on, and preempting is what makes it
short. So the agent switches policy as its pipeline fills and empties (a system call per
switch, not per task). See "Worker = agent + processor" in ``docs/architecture.rst`` for
measurements.

Until 2026-12-05 the agent also required its tasks to take 0.4 ms or more (a moving
average of the time between results): with tasks of tens of µs its turn was thought to be
what the next task waits on. But the pipeline sends short tasks 16 ahead, so the processor
never waits on it then, and without that condition the no-op map ran about 8 % faster and
streams of 50 µs and 200 µs tasks 8-12 points more efficiently on 2 cores.

The processor, started by the agent, inherits the policy of the moment
(``SCHED_RESET_ON_FORK`` resets only real-time ones), so it puts itself back to
``SCHED_OTHER`` first thing: user code and whatever it starts run as anywhere else.
A worker an operator started under another policy than ``SCHED_OTHER`` (``chrt``) is left
as it is, and so is its processor. ``SCALER_AGENT_SCHED_BATCH=0`` turns all this off.

An unprivileged process may move its threads between ``SCHED_OTHER`` and ``SCHED_BATCH``
(sched(7)); where the call is missing (not Linux) or refused, nothing changes.
"""

import os

ENV = "SCALER_AGENT_SCHED_BATCH"
PROCESSOR_ARGS = ("--scheduling", "normal")  # the processor's command line: go back to SCHED_OTHER
LINED_UP = 2  # tasks held (running one included) from which the agent yields to its processor


def _wanted() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("0", "false", "no", "off")


class AgentPolicy:
    """The scheduling policy of the agent's thread, following how many tasks it holds."""

    __slots__ = ("enabled", "batch")

    def __init__(self) -> None:
        self.batch = False
        self.enabled = False
        if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH") and _wanted():
            try:
                self.enabled = os.sched_getscheduler(0) == os.SCHED_OTHER  # else: chosen for us, kept
            except OSError:
                pass

    def holding(self, tasks: int) -> None:
        """The agent holds ``tasks`` (queued, preparing, with the processor): switch if due."""
        batch = tasks >= LINED_UP
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


def processor_policy() -> None:
    """Back to ``SCHED_OTHER`` from the agent's ``SCHED_BATCH`` (the processor's first step,
    before it starts a thread or runs user code)."""
    try:
        if os.sched_getscheduler(0) == os.SCHED_BATCH:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        pass


__all__ = ["ENV", "LINED_UP", "PROCESSOR_ARGS", "AgentPolicy",
           "processor_policy"]
