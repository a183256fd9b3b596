"""While its processor has tasks lined up, a worker agent runs under Linux's ``SCHED_BATCH``
policy; otherwise, and always for the processor that runs user code, the normal one.

Why: when every CPU is busy running tasks, a processor that ends a task wakes its agent
with the result, and under the normal policy the agent, having slept, preempts a running
processor at once — very often its own, on the CPU it was just woken from, which then
waits the agent's whole turn before it starts its next task. Under ``SCHED_BATCH`` the
agent still gets its fair share of CPU (same nice value, same weight), but its wake-up no
longer preempts: it runs when a CPU frees up or the running task's slice ends, and by then
it usually finds several results to forward in one turn. That is only right while the
processor has its next task at hand, and tasks that take a while: with nothing lined up,
or with tasks not much longer than the agent's own turn (tens of µs), the agent's turn is
what the next task (or the one result someone waits for) waits on, and preempting is what
makes it short. So the agent switches policy as its pipeline fills and empties and as its
tasks' typical duration crosses two thresholds (a system call per switch, not per task).
See "Worker = agent + processor" in ``docs/architecture.rst`` for measurements.

The processor, started by the agent, inherits the policy of the moment
(``SCHED_RESET_ON_FORK`` resets only real-time ones), so it puts itself back to
``SCHED_OTHER`` first thing: user code and whatever it starts run as anywhere else.
A worker an operator started under another policy than ``SCHED_OTHER`` (``chrt``) is left
as it is, and so is its processor. ``SCALER_AGENT_SCHED_BATCH=0`` turns all this off.

An unprivileged process may move its threads between ``SCHED_OTHER`` and ``SCHED_BATCH``
(sched(7)); where the call is missing (not Linux) or refused, nothing changes.
"""

import os
from typing import Sized

ENV = "SCALER_AGENT_SCHED_BATCH"
PROCESSOR_ARGS = ("--scheduling", "normal")  # the processor's command line: go back to SCHED_OTHER
LINED_UP = 2  # tasks held (running one included) from which the agent yields to its processor,
ENTER_SECONDS = 0.0004  # ...once its tasks typically last this long (several agent turns),
LEAVE_SECONDS = 0.00015  # ...until they typically last less than this.
_WEIGHT = 1.0 / 16  # of a new sample in "typically": slow, as the mean of a stream's results is what counts
_SAMPLE_CAP = 0.002  # a longer sample counts as this: one stall, or one long task, moves it by little


def _wanted() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("0", "false", "no", "off")


class AgentPolicy:
    """The scheduling policy of the agent's thread, following how many tasks it holds and
    how long they typically take.

    "Typically" is a slow moving average of the time between the processor's results
    (``TaskPipeline.last_task_seconds``). Samples are noisy: a result the agent reads late
    (it was not running) counts the wait, and the ones read with it count almost nothing.
    Averaged over many results they give the processor's time per task; capped, one stall
    cannot tip a stream of short tasks over; and the two thresholds apart keep the policy
    from flapping (each switch is a system call)."""

    __slots__ = ("enabled", "batch", "typical")

    def __init__(self) -> None:
        self.batch = False
        self.typical = 0.0
        self.enabled = False
        if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH") and _wanted():
            try:
                self.enabled = os.sched_getscheduler(0) == os.SCHED_OTHER  # else: chosen for us, kept
            except OSError:
                pass

    def task_ended(self, seconds: float, held: Sized) -> None:
        """A result came back ``seconds`` after the previous one (or after its task was sent);
        ``held``: the tasks the agent still holds (counted only when the answer may change:
        this runs for every result of a stream)."""
        typical = self.typical = self.typical + _WEIGHT * (min(seconds, _SAMPLE_CAP) - self.typical)
        if self.batch or typical >= ENTER_SECONDS:
            self.holding(len(held))

    def holding(self, tasks: int) -> None:
        """The agent holds ``tasks`` (queued, preparing, with the processor): switch if due."""
        if tasks < LINED_UP:
            batch = False
        else:
            batch = self.typical >= (LEAVE_SECONDS if self.batch else ENTER_SECONDS)
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


__all__ = ["ENTER_SECONDS", "ENV", "LEAVE_SECONDS", "LINED_UP", "PROCESSOR_ARGS", "AgentPolicy",
           "processor_policy"]
