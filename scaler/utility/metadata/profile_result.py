"""``ProfileResult``: what a processor measured around one task, when the client asked for it.

Measured in the processor that ran the task, from the moment it starts decoding the task's
arguments until the result is serialised:

- ``duration_s``: wall-clock seconds (``time.perf_counter``);
- ``cpu_time_s``: CPU seconds of the processor, user + system, all threads
  (``time.process_time``);
- ``memory_peak``: bytes by which the processor's peak resident memory during the task
  exceeded its resident memory when the task started. On Linux the kernel's peak (VmHWM) is
  reset before each profiled task, so this is the true peak, not a sample; elsewhere it is the
  growth of the process's lifetime peak (``resource.getrusage``), which misses a task whose
  peak stays below an earlier task's.

Upstream samples memory once a second from the worker agent; this is exact (to within what
50 µs of page faults bring in, for a task that short) and costs about 1-2 µs per profiled
task in a stream (``scaler.worker.profiling``). The three numbers travel
back in the result message's ``detail`` text (``to_detail`` / ``from_detail``), which
successful results do not otherwise use.
"""

import dataclasses
from typing import Optional

_PREFIX = "profile:"
DETAIL_FORMAT = _PREFIX + "%d,%d,%d"  # see format_detail


@dataclasses.dataclass
class ProfileResult:
    duration_s: float = 0.0
    memory_peak: int = 0
    cpu_time_s: float = 0.0

    def to_detail(self) -> str:
        return format_detail(round(self.duration_s * 1e9), self.memory_peak, round(self.cpu_time_s * 1e6))

    @classmethod
    def from_detail(cls, detail: str) -> Optional["ProfileResult"]:
        """The result a ``to_detail`` text describes; None for any other text."""
        if not detail.startswith(_PREFIX):
            return None
        try:
            duration_ns, memory, cpu_us = detail[len(_PREFIX):].split(",")
            return cls(int(duration_ns) / 1e9, int(memory), int(cpu_us) / 1e6)
        except ValueError:
            return None


def format_detail(duration_ns: int, memory_peak: int, cpu_time_us: int) -> str:
    """The ``detail`` text of a profiled result: wall nanoseconds, peak bytes, CPU microseconds
    (integers: a float's repr costs the processor 4× more per task)."""
    return DETAIL_FORMAT % (duration_ns, memory_peak, cpu_time_us)
