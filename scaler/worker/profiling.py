"""Measuring one task in the processor, for clients created with ``profiling=True``.

See ``scaler.utility.metadata.profile_result`` for what each number means. Only tasks whose
``FLAG_PROFILE`` is set pay for it: a clock read before and after, a write to
``/proc/self/clear_refs`` (resetting the kernel's peak-RSS mark) and a read of
``/proc/self/status``.
"""

import os
import time
from typing import Any, Callable, Tuple

from ..utility.metadata.profile_result import ProfileResult
from ..utility.process import rss_bytes

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


class TaskProfiler:
    def __init__(self) -> None:
        self.exact_peak = os.path.exists(_CLEAR_REFS)

    def measure(self, run: Callable[[], Any]) -> Tuple[Any, ProfileResult]:
        """``run()`` and what it cost."""
        exact = self.exact_peak and self._reset_peak()
        rss_before = rss_bytes()
        peak_before = 0 if exact else _lifetime_peak()
        cpu_before = time.process_time()
        start = time.perf_counter()
        result = run()
        duration = time.perf_counter() - start
        cpu = time.process_time() - cpu_before
        if exact:
            peak = _peak_since_reset()
            growth = max(0, peak - rss_before) if peak else 0
        else:
            growth = max(0, _lifetime_peak() - max(peak_before, rss_before))
        return result, ProfileResult(duration_s=duration, memory_peak=growth, cpu_time_s=cpu)

    def _reset_peak(self) -> bool:
        try:
            with open(_CLEAR_REFS, "w") as f:
                f.write("5")  # 5: reset the peak resident set size (Linux 4.0+)
            return True
        except OSError:
            self.exact_peak = False
            return False


def _peak_since_reset() -> int:
    """VmHWM (the peak resident set size since the last reset) in bytes; 0 if unreadable."""
    try:
        with open(_STATUS, "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _lifetime_peak() -> int:
    try:
        import resource
        import sys
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError, ValueError):
        return 0
