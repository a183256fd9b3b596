"""CPU and memory of a process, from ``/proc`` with a portable fallback. No psutil.

:class:`ProcessMeter` samples one process: each :meth:`ProcessMeter.sample` returns the CPU
it used since the previous sample, as a percentage of one core, and its resident memory.
On Linux any process can be measured (``/proc/<pid>/stat`` and ``statm``); elsewhere only
the current one, through ``os.times()`` and ``resource.getrusage`` (peak, not current,
resident size: the best the standard library offers there).
"""

import os
import sys
import time
from typing import Optional, Tuple

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") and "SC_CLK_TCK" in getattr(
    os, "sysconf_names", {}) else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") and "SC_PAGE_SIZE" in getattr(
    os, "sysconf_names", {}) else 4096


def proc_cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU seconds of ``pid`` from ``/proc``, or None (no such process, no /proc)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()  # the command name may hold spaces and ')'
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return None


def proc_rss_bytes(pid: int) -> Optional[int]:
    """Resident memory of ``pid`` from ``/proc``, or None."""
    try:
        with open("/proc/%d/statm" % pid, "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _own_peak_rss_bytes() -> int:
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class ProcessMeter:
    """CPU % since the previous sample and RSS of one process (``pid=None``: this one)."""

    __slots__ = ("pid", "_own", "_last_cpu", "_last_time")

    def __init__(self, pid: Optional[int] = None) -> None:
        self._own = pid is None or pid == os.getpid()
        self.pid = os.getpid() if pid is None else pid
        self._last_cpu = self._cpu_seconds()
        self._last_time = time.monotonic()

    def _cpu_seconds(self) -> Optional[float]:
        seconds = proc_cpu_seconds(self.pid)
        if seconds is None and self._own:
            seconds = _own_cpu_seconds()
        return seconds

    def rss(self) -> int:
        rss = proc_rss_bytes(self.pid)
        if rss is None:
            rss = _own_peak_rss_bytes() if self._own else 0
        return rss

    def sample(self) -> Tuple[float, int]:
        """(CPU % of one core since the previous sample, resident bytes); (0.0, 0) when unknown."""
        now = time.monotonic()
        cpu = self._cpu_seconds()
        percent = 0.0
        if cpu is not None and self._last_cpu is not None and now > self._last_time:
            percent = max(0.0, 100.0 * (cpu - self._last_cpu) / (now - self._last_time))
        self._last_cpu = cpu
        self._last_time = now
        return percent, self.rss()

