"""scaler.progress: the bar's text, when it draws, and that it waits (no cluster needed)."""

import io
import os
import pty
import threading
import time
from concurrent.futures import Future, TimeoutError as FuturesTimeoutError

import pytest

import scaler
from scaler.client.progress import _Bar


def _finish_later(futures, delay=0.01, fail=()):
    def run():
        for i, future in enumerate(futures):
            time.sleep(delay)
            if i in fail:
                future.set_exception(ValueError(i))
            else:
                future.set_result(i)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_waits_for_every_future_and_draws_when_forced():
    futures = [Future() for _ in range(30)]
    _finish_later(futures, fail={3, 7})
    out = io.StringIO()
    assert scaler.progress(futures, file=out, force=True, interval=0.01) == futures
    assert all(f.done() for f in futures)
    text = out.getvalue()
    last = text.rstrip("\n").split("\r")[-1]
    assert "30/30 100%" in last and "2 failed" in last and "/s" in last and last.startswith("[")
    assert "\x1b" not in text  # forced onto a file: no escape codes
    assert text.endswith("\n") and text.count("\n") == 1  # one line, redrawn in place


def test_silent_when_not_a_terminal():
    futures = [Future() for _ in range(5)]
    _finish_later(futures)
    out = io.StringIO()
    scaler.progress(futures, file=out, interval=0.01)
    assert out.getvalue() == "" and all(f.done() for f in futures)


def test_draws_on_a_real_terminal():
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as terminal:
            futures = [Future() for _ in range(10)]
            _finish_later(futures)
            scaler.progress(futures, file=terminal, interval=0.01, description="crunching")
        data = b""
        os.set_blocking(master, False)
        try:
            while True:
                chunk = os.read(master, 65536)
                if not chunk:
                    break
                data += chunk
        except (BlockingIOError, OSError):
            pass
    finally:
        os.close(master)
        os.close(slave)
    text = data.decode()
    assert "crunching [" in text and "10/10 100%" in text and "\x1b[K" in text


def test_timeout_raises_and_leaves_the_futures_running():
    futures = [Future(), Future()]
    futures[0].set_result(1)
    with pytest.raises(FuturesTimeoutError, match="1 of 2"):
        scaler.progress(futures, timeout=0.1, file=io.StringIO(), force=True)
    assert not futures[1].done()
    with pytest.raises(ValueError):
        scaler.progress(futures, interval=0)


def test_the_line_fits_the_terminal_and_estimates():
    bar = _Bar(1000, io.StringIO(), "")
    bar.started -= 10.0  # 10 s in
    line = bar.line(500, 0, 80)
    assert len(line) == 80 and " 500/1000  50%" in line and "50/s" in line and "ETA 0:00:10" in line
    assert len(bar.line(500, 0, 30)) <= 30  # narrow: numbers without the bar
    assert bar.line(1000, 0, 80).split("]")[0].count("-") == 0 and "in 0:00:10" in bar.line(1000, 0, 80)
    assert "100%" in _Bar(0, io.StringIO(), "").line(0, 0, 80)  # nothing to do is done
