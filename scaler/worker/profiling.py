"""Measuring one task in the processor, for clients created with ``profiling=True``.

See ``scaler.utility.metadata.profile_result`` for what each number means. Only tasks whose
``FLAG_PROFILE`` is set pay for it: clock reads before and after, a one-byte write to
``/proc/self/clear_refs`` (resetting the kernel's peak-RSS mark), a read of
``/proc/self/statm`` through a descriptor kept open and two ``getrusage`` calls: about
6 µs in all (``/proc/self/status`` is parsed instead, ~12 µs more, only when getrusage's
peak holds an older mark).
"""

import os
import sys
import time
from typing import Any, Callable, Optional, Tuple

from ..utility.metadata.profile_result import ProfileResult

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


_SLACK = 1 << 20  # an older mark this close above the current RSS costs at most this much accuracy


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

    def measure(self, run: Callable[[], Any]) -> Tuple[Any, ProfileResult]:
        """``run()`` and what it cost."""
        exact = self._reset_peak()
        peak_before = _lifetime_peak()
        # getrusage's peak is max(the reset mark, the peaks of threads that ended, the peak
        # at exec). When, right after the reset, it reads no more than the current RSS (plus
        # a little: memory freed in between), no older mark hides behind it and it gives the
        # task's peak in ~1 µs; otherwise /proc/self/status's VmHWM is parsed (~12 µs).
        rss_before = self._rss() if exact else 0
        fast = exact and 0 < peak_before <= rss_before + _SLACK
        cpu_before = time.process_time()
        start = time.perf_counter()
        result = run()
        duration = time.perf_counter() - start
        cpu = time.process_time() - cpu_before
        if fast:
            growth = max(0, _lifetime_peak() - peak_before)
        elif exact:
            peak = self._peak_since_reset()
            growth = max(0, peak - rss_before) if peak else 0
        else:
            growth = max(0, _lifetime_peak() - peak_before)
        return result, ProfileResult(duration_s=duration, memory_peak=growth, cpu_time_s=cpu)

    def _reset_peak(self) -> bool:
        if self._clear_refs is None:
            return False
        try:
            os.write(self._clear_refs, b"5")  # 5: reset the peak resident set size (Linux 4.0+)
            return True
        except OSError:
            self._close()
            return False

    def _rss(self) -> int:
        try:
            return int(os.pread(self._statm, 128, 0).split()[1]) * _PAGE_SIZE  # type: ignore[arg-type]
        except (OSError, ValueError, IndexError, TypeError):
            return 0

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


try:
    import resource as _resource
except ImportError:  # Windows
    _resource = None  # type: ignore[assignment]


def _lifetime_peak() -> int:
    if _resource is None:
        return 0
    try:
        peak = _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError):
        return 0
    return peak if sys.platform == "darwin" else peak * 1024
