"""TaskProfiler (the processor's measurement for Client(profiling=True)), driven directly."""

import sys
import threading
import time

import pytest

from scaler.worker.profiling import TaskProfiler

MiB = 1024 * 1024


def _touch(size):
    """Fresh pages, touched: a new anonymous mapping (a bytearray could reuse heap memory an
    earlier test left resident, and then no peak would show)."""
    import mmap
    block = mmap.mmap(-1, size)
    for offset in range(0, size, 4096):
        block[offset] = 1
    return block


def test_cpu_wall_and_memory_of_one_call():
    profiler = TaskProfiler()

    def spin():
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass
        return len(_touch(30 * MiB))

    result, profile = profiler.measure(spin)
    assert result == 30 * MiB
    assert profile.cpu_time_s >= 0.05 and profile.duration_s >= 0.05
    if sys.platform.startswith("linux"):
        assert 25 * MiB <= profile.memory_peak <= 60 * MiB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the exact peak reads /proc")
def test_a_big_peak_from_an_exited_thread_does_not_leak_into_later_tasks():
    """getrusage remembers a thread's peak when it exits: the profiler must not report it again."""
    profiler = TaskProfiler()
    thread = threading.Thread(target=lambda: profiler.measure(lambda: len(_touch(150 * MiB))))
    thread.start()
    thread.join(30)
    _, small = profiler.measure(lambda: len(_touch(5 * MiB)))
    assert small.memory_peak < 40 * MiB, small
    _, nothing = profiler.measure(lambda: None)
    assert nothing.memory_peak < 10 * MiB, nothing
