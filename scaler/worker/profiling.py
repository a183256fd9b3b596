"""Measuring one task in the processor, for clients created with ``profiling=True``.

See ``scaler.utility.metadata.profile_result`` for what each number means. Only tasks whose
``FLAG_PROFILE`` is set pay for it: in a stream of tiny tasks most pay no system call, the
others one, two after a wait. At the end of a task, the wall clock
(``time.perf_counter_ns``, no system call) and one ``getrusage``, which gives the CPU time
(on Linux the clock ``time.process_time_ns`` reads, in µs), the page faults and the
kernel's peak RSS. At the start, the wall clock, and the CPU clock only if the processor
waited since that last reading (for a task, or for sub-tasks: :meth:`TaskProfiler.waited`)
or more than 50 µs passed: otherwise it ran all along, and its CPU clock moved as far as
the wall clock did (a preemption of under 50 µs in between would be deducted from the
task's CPU time; elsewhere than Linux, the CPU clock is read at both ends). The start of a
task also reuses the fault count read at the end of the previous one: between tasks the
processor allocates nothing that faults, except when it receives an object or runs a task
that is not profiled, and then it calls :meth:`TaskProfiler.invalidate`.

The same reasoning spares the ``getrusage`` at the end of a task that ends within 50 µs
of the last one (``_ESTIMATE_NS``), the processor not having waited or received anything
since (and the reading was taken before the task started, not by a task nested in it):
it ran all along, so its CPU time is its wall time (over by at most the part of those
50 µs it was preempted for), and 50 µs of page faults bring in ~100 KB on the reference
machine and well under the 1 MiB a peak mark is trusted to anywhere (``_SLACK``), so it
reports no growth. Its CPU reading, so estimated, can be the next task's start, so a
task in a stream starts from a chain of at most two estimates: its CPU time can come out
short by what preemption the processor took in up to 100 µs before it, never more. The
estimated task's faults, if any, are seen by the next real reading and counted in that
task's growth (at most what those 50 µs could bring in). In a stream of
no-op tasks about three ends in four are estimated: the system call, at 1-2 µs in a busy
processor, was most of what profiling cost them.

The peak needs more, but only after a task that grew memory. Resident memory grows only
through page faults, so a task during which the process took none grew by exactly 0 bytes.
For the others, the kernel's peak-RSS mark was reset beforehand (a one-byte write to
``/proc/self/clear_refs``) and the RSS read then (``/proc/self/statm``); together, ~4 µs more
in a busy processor. That *arming* is done before a task when the previous one faulted, when
the processor received an object, or when it is more than 1 ms old, so in a stream of tiny
tasks that allocate nothing new most pay only the clocks. The price: memory given back to
the system in the last millisecond before a task (by earlier tasks) can hide that much of
the task's own peak.
"""

import os
import sys
import time
from typing import Any, Callable, Optional, Tuple

from ..utility.metadata.profile_result import DETAIL_FORMAT, ProfileResult, format_detail

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_SLACK = 1 << 20  # an older mark this close above the current RSS costs at most this much accuracy
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
_CPU_IN_RUSAGE = sys.platform.startswith("linux")  # getrusage's utime + stime is process_time's clock
_REARM_NS = 1000000  # a peak mark older than this is reset before the next task
# A task that starts this soon after the last CPU reading, the processor not having waited,
# takes that reading plus the wall time in between as its start (begin): the processor's
# own work between two tasks takes ~10-20 µs, so a longer gap means it was preempted.
_GAP_NS = 50000

# A task that ends this soon after the last getrusage, the processor not having waited or
# received anything since, estimates its end instead of reading it (end_detail).
_ESTIMATE_NS = 50000
_NEVER = -(1 << 62)  # a _cpu_read_at that no gap is short enough to bridge
_perf_counter_ns = time.perf_counter_ns

try:
    import resource as _resource
    _getrusage = _resource.getrusage
    _RUSAGE_SELF = _resource.RUSAGE_SELF
except ImportError:  # Windows: wall-clock time and process_time only
    _resource = None  # type: ignore[assignment]


def _cpu_ns(usage: Any) -> int:
    """A getrusage's CPU time, user + system, in ns (µs resolution); by index, cheaper than
    ``ru_utime``/``ru_stime`` on the per-task path."""
    return round((usage[0] + usage[1]) * 1e6) * 1000


Mark = Tuple[int, int, int, int]  # process_time_ns, page faults, lifetime peak bytes (no /proc), perf_counter_ns at the start


class TaskProfiler:
    def __init__(self) -> None:
        self._clear_refs: Optional[int] = None  # descriptors of this process's /proc files, when available
        self._statm: Optional[int] = None
        self._status: Optional[int] = None
        try:
            self._clear_refs = os.open("/proc/self/clear_refs", os.O_WRONLY)
            self._statm = os.open("/proc/self/statm", os.O_RDONLY)
            self._status = os.open("/proc/self/status", os.O_RDONLY)
        except OSError:
            self._close()
        self._armed_at = 0  # perf_counter_ns of the last reset of the kernel's peak mark; 0: none to trust
        self._rss_armed = 0  # the RSS read right after that reset
        self._hidden = False  # getrusage's peak holds an older mark than the reset (an exited thread's)
        self._faults = 0  # page faults at the last getrusage (the end of the last task, or _arm)
        # The CPU clock (ns) at the last getrusage, and perf_counter_ns when it was read; _NEVER:
        # the processor may have waited since, the next task reads the clock itself (see begin).
        self._cpu_read = 0
        self._cpu_read_at = _NEVER
        # perf_counter_ns of the last getrusage (CPU and faults) the processor has not waited
        # since; _NEVER: the next task's end reads it (see end_detail).
        self._usage_read_at = _NEVER

    def measure(self, run: Callable[[], Any]) -> Tuple[Any, ProfileResult]:
        """``run()`` and what it cost."""
        mark = self.begin()
        result = run()
        profile = ProfileResult.from_detail(self.end_detail(mark))
        assert profile is not None
        return result, profile

    def begin(self) -> Mark:
        """Taken right before a task; ``end_detail`` turns it into the task's figures.

        A task that starts within ``_GAP_NS`` of the last CPU reading (the previous task's end,
        with no wait in between: :meth:`waited`) starts at that reading plus the wall time
        since: the processor ran all along, so its CPU clock moved exactly as far (a
        single-threaded process cannot run faster than the wall clock, and a longer gap, a
        preemption, takes a real reading). That saves the one system call a task in a stream
        would otherwise pay at its start."""
        now = _perf_counter_ns()
        if now - self._armed_at > _REARM_NS and self._clear_refs is not None:
            self._arm()
            now = _perf_counter_ns()
        if now - self._cpu_read_at <= _GAP_NS:  # (never without the /proc files: see _close)
            return self._cpu_read + (now - self._cpu_read_at), self._faults, 0, now
        if self._clear_refs is None:  # no /proc: getrusage at both ends (or no memory figure at all)
            if _resource is None:
                return time.process_time_ns(), 0, 0, _perf_counter_ns()
            usage = _resource.getrusage(_resource.RUSAGE_SELF)
            return (time.process_time_ns(), usage.ru_minflt + usage.ru_majflt, usage.ru_maxrss * _MAXRSS_UNIT,
                    _perf_counter_ns())
        # The fault count read at the end of the previous task (or by _arm) stands for now: the
        # processor's own work in between allocates nothing new, and what does (an object
        # received) calls invalidate(), so the next task re-arms.
        return time.process_time_ns(), self._faults, 0, _perf_counter_ns()

    def invalidate(self) -> None:
        """The processor may have grown since the last task (it received an object, or ran a
        task that is not profiled): re-arm before the next task, so that growth is not
        counted as the task's."""
        self._armed_at = 0
        self._cpu_read_at = self._usage_read_at = _NEVER

    def waited(self) -> None:
        """The processor is about to block (for the next task, or for sub-tasks): the next task
        reads the CPU clock itself, and its end getrusage."""
        self._cpu_read_at = self._usage_read_at = _NEVER

    def end_detail(self, mark: Mark) -> str:
        """What the task cost since ``begin``, as the text its result's ``detail`` carries
        (``ProfileResult.from_detail`` reads it): integers, which format 4× faster than floats."""
        end = _perf_counter_ns()
        cpu_before, faults_before, peak_before, start = mark
        if end - self._usage_read_at <= _ESTIMATE_NS and start >= self._usage_read_at:
            # Within _ESTIMATE_NS of the last getrusage, taken before the task started (not by
            # a nested task run on top of it), not having waited since: the processor ran all
            # along (the CPU clock moved as far as the wall clock) and faulted in too little
            # to count (see the module doc). The next real reading sees any fault.
            wall = end - start
            self._cpu_read = cpu_before + wall
            self._cpu_read_at = end
            return DETAIL_FORMAT % (wall, 0, wall // 1000)
        if _resource is None:
            return format_detail(end - start, 0, max((time.process_time_ns() - cpu_before) // 1000, 0))
        usage = _getrusage(_RUSAGE_SELF)
        if _CPU_IN_RUSAGE:
            # The clock process_time_ns reads: Linux splits the process's exact run time into
            # ru_utime + ru_stime (µs each), so one system call gives the end's figures. It is
            # kept for the next task's start (begin), as read at ``end``: that task's CPU time
            # comes out short by this getrusage's own ~1 µs, under the figure's resolution.
            cpu = _cpu_ns(usage)
            if self._clear_refs is not None:
                self._cpu_read = cpu
                self._cpu_read_at = self._usage_read_at = end
            cpu = (cpu - cpu_before) // 1000
            if cpu < 0:
                cpu = 0
        else:
            cpu = max((time.process_time_ns() - cpu_before) // 1000, 0)
        faults = self._faults = usage[6] + usage[7]  # ru_minflt + ru_majflt
        if faults == faults_before:  # no page came in: the resident set never rose above where it started
            return DETAIL_FORMAT % (end - start, 0, cpu)
        if self._armed_at:
            peak = self._peak_since_reset() if self._hidden else usage.ru_maxrss * _MAXRSS_UNIT
            growth = peak - self._rss_armed if peak else 0
            self._armed_at = 0  # the mark may now stand above the RSS: reset it before the next task
        else:  # no /proc: how far the lifetime peak rose, blind to a peak below an earlier task's
            growth = usage.ru_maxrss * _MAXRSS_UNIT - peak_before
        return DETAIL_FORMAT % (end - start, growth if growth > 0 else 0, cpu)

    def _arm(self) -> None:
        """Reset the kernel's peak mark to the current RSS and read both."""
        try:
            os.write(self._clear_refs, b"5")  # type: ignore[arg-type]  # 5: reset the peak RSS (Linux 4.0+)
            rss = int(os.pread(self._statm, 128, 0).split()[1]) * _PAGE_SIZE  # type: ignore[arg-type]
        except (OSError, ValueError, IndexError):
            self._close()
            self._armed_at = 0
            return
        # getrusage's peak is max(the reset mark, the peaks of threads that ended, the peak at
        # exec). When, right after the reset, it reads no more than the RSS (plus a little:
        # memory freed in between), it gives the task's peak; otherwise /proc/self/status's
        # VmHWM is parsed after a task that faulted (~12 µs).
        usage = _getrusage(_RUSAGE_SELF)
        if _CPU_IN_RUSAGE:
            self._cpu_read = _cpu_ns(usage)
            self._cpu_read_at = self._usage_read_at = _perf_counter_ns()
        peak = usage.ru_maxrss * _MAXRSS_UNIT
        self._faults = usage.ru_minflt + usage.ru_majflt
        self._hidden = not 0 < peak <= rss + _SLACK
        self._rss_armed = rss
        self._armed_at = _perf_counter_ns()

    def _peak_since_reset(self) -> int:
        """VmHWM (the peak resident set size since the last reset) in bytes; 0 if unreadable."""
        try:
            data = os.pread(self._status, 8192, 0)  # type: ignore[arg-type]
            at = data.index(b"VmHWM:")
            return int(data[at + 6:data.index(b"\n", at)].split()[0]) * 1024
        except (OSError, ValueError, IndexError, TypeError):
            return 0

    def _close(self) -> None:
        for fd in (self._clear_refs, self._statm, self._status):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._clear_refs = self._statm = self._status = None
        self._cpu_read_at = self._usage_read_at = _NEVER  # the start estimate needs the exact peak's reset (begin)
