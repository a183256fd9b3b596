"""A one-line progress bar for futures, drawn on a terminal, with no dependency.

``scaler.progress(futures)`` and ``client.map(..., progress=True)`` use it::

    [############--------------]   523/1000  52%  1.2k/s  ETA 0:00:04  2 failed

It waits for the futures the way ``future.result()`` does (so inside a task it still runs
the task's children), counts them through done-callbacks, and redraws at most every
``interval`` seconds. Silent when the stream is not a terminal, unless ``force=True``.
"""

import shutil
import sys
import threading
import time
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from typing import Iterable, List, Optional, TextIO

__all__ = ["progress"]


def progress(futures: Iterable[Future], *, file: Optional[TextIO] = None, force: bool = False,
             interval: float = 0.2, timeout: Optional[float] = None, description: str = "") -> List[Future]:
    """Block until every future is done, drawing a progress bar on ``file`` (default
    ``sys.stderr``) if it is a terminal or ``force`` is true. Returns the futures as a list.

    Failed and cancelled futures count as done (the bar shows how many failed); read their
    results afterwards. ``timeout``: ``concurrent.futures.TimeoutError`` if they are not
    all done by then (the futures keep running)."""
    futures = list(futures)
    if interval <= 0:
        raise ValueError("interval must be > 0, got %r" % (interval,))
    stream = file if file is not None else sys.stderr
    bar = _Bar(len(futures), stream, description) if (force or _is_terminal(stream)) else None
    counter = _Counter()
    for future in futures:
        future.add_done_callback(counter.done)
    deadline = None if timeout is None else time.monotonic() + timeout
    position = 0
    try:
        while True:
            while position < len(futures) and futures[position].done():
                position += 1
            if bar is not None:
                bar.draw(counter.finished, counter.failed)
            if position == len(futures):
                return futures
            wait = interval if bar is not None else None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FuturesTimeoutError("%d of %d futures not done after %s s"
                                              % (len(futures) - counter.finished, len(futures), timeout))
                wait = remaining if wait is None else min(wait, remaining)
            try:
                futures[position].exception(wait)  # inside a task, this runs its children meanwhile
            except (FuturesTimeoutError, CancelledError):
                pass
    finally:
        if bar is not None:
            bar.close(counter.finished, counter.failed)


class _Counter:
    """Done-callbacks run on the client's I/O thread: they only count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.finished = 0
        self.failed = 0

    def done(self, future: Future) -> None:
        failed = future.cancelled() or future.exception() is not None
        with self._lock:
            self.finished += 1
            if failed:
                self.failed += 1


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class _Bar:
    def __init__(self, total: int, stream: TextIO, description: str) -> None:
        self.total = total
        self.stream = stream
        self.prefix = description + " " if description else ""
        self.started = time.monotonic()
        self.last = ""
        self.tty = _is_terminal(stream)  # forced onto a file or a pipe: no escape codes

    def line(self, finished: int, failed: int, width: int) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = finished / elapsed
        percent = 100 if self.total == 0 else finished * 100 // self.total
        eta = "--:--:--" if rate <= 0 else _clock((self.total - finished) / rate)
        digits = len(str(self.total))
        tail = " %*d/%d %3d%%  %s/s  ETA %s" % (digits, finished, self.total, percent, _rate(rate), eta)
        if finished == self.total:
            tail = " %*d/%d %3d%%  %s/s  in %s" % (digits, finished, self.total, percent, _rate(rate),
                                                  _clock(elapsed))
        if failed:
            tail += "  %d failed" % failed
        room = width - len(self.prefix) - len(tail) - 2
        if room < 10:  # a narrow terminal: the numbers matter more than the bar
            return (self.prefix + tail.strip())[:max(width - 1, 1)]
        filled = room if self.total == 0 else room * finished // self.total
        return "%s[%s%s]%s" % (self.prefix, "#" * filled, "-" * (room - filled), tail)

    def draw(self, finished: int, failed: int) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        text = self.line(finished, failed, width)
        if text == self.last:
            return
        clear = "\x1b[K" if self.tty else " " * max(0, len(self.last) - len(text))
        self.last = text
        self._write("\r" + text + clear)

    def close(self, finished: int, failed: int) -> None:
        self.draw(finished, failed)
        self._write("\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not fail the work it reports on


def _rate(per_second: float) -> str:
    if per_second >= 1000:
        return "%.1fk" % (per_second / 1000)
    if per_second >= 10:
        return "%.0f" % per_second
    return "%.1f" % per_second


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return "%d:%02d:%02d" % (seconds // 3600, seconds % 3600 // 60, seconds % 60)
