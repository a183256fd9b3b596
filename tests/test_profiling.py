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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the exact peak reads /proc")
def test_a_peak_after_many_small_tasks_is_still_measured():
    """Tiny tasks that take no page fault skip the reset of the kernel's mark; the first task
    that grows memory must still report its whole peak."""
    profiler = TaskProfiler()
    for _ in range(2000):
        _, profile = profiler.measure(lambda: None)
    assert profile.memory_peak < 2 * MiB
    _, grown = profiler.measure(lambda: len(_touch(30 * MiB)))
    assert 25 * MiB <= grown.memory_peak <= 60 * MiB, grown
    _, after = profiler.measure(lambda: None)  # the mark the big task left is not charged to the next
    assert after.memory_peak < 2 * MiB, after


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the exact peak reads /proc")
def test_memory_freed_by_an_earlier_task_does_not_hide_a_later_peak():
    """A task frees what an earlier one kept; a millisecond later the next task's peak, below
    the old one, must still show (the mark is reset when it is older than 1 ms)."""
    profiler = TaskProfiler()
    kept = []
    profiler.measure(lambda: kept.append(_touch(60 * MiB)))
    profiler.measure(lambda: kept.clear())
    time.sleep(0.005)
    _, later = profiler.measure(lambda: len(_touch(20 * MiB)))
    assert 15 * MiB <= later.memory_peak <= 50 * MiB, later


def test_a_task_that_allocates_nothing_reports_no_growth():
    profiler = TaskProfiler()
    profiler.measure(lambda: None)
    _, profile = profiler.measure(lambda: sum(range(1000)))
    assert profile.memory_peak < MiB
    assert profile.duration_s > 0 and profile.cpu_time_s >= 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the exact peak reads /proc")
def test_growth_between_tasks_is_not_charged_to_the_next_one(monkeypatch):
    """The processor reads the fault count once per task (at its end) and reuses it for the
    next task's start; what it allocates itself in between (an object received) calls
    invalidate(), and that growth must not show up as the next task's peak."""
    import scaler.worker.profiling as profiling
    monkeypatch.setattr(profiling, "_REARM_NS", 10 ** 12)  # only a fault or invalidate() re-arms here
    profiler = TaskProfiler()
    profiler.measure(lambda: None)
    profiler.measure(lambda: None)
    received = _touch(8 * MiB)  # the processor's own growth, between two tasks
    profiler.invalidate()
    _, after = profiler.measure(lambda: None)
    assert after.memory_peak < 1 * MiB, after
    _, grown = profiler.measure(lambda: len(_touch(16 * MiB)))  # and a real peak still shows
    assert 12 * MiB <= grown.memory_peak <= 40 * MiB, grown
    del received


def _spin(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the start estimate reads getrusage's CPU time")
def test_a_task_right_after_another_starts_from_the_last_reading_and_measures_exactly():
    """In a stream, a task's start is the previous end's CPU reading plus the wall time since
    (no system call); what the task itself burns is still measured to the millisecond."""
    profiler = TaskProfiler()
    for _ in range(20):
        _, profile = profiler.measure(lambda: _spin(0.005))
        assert 0.004 <= profile.cpu_time_s <= 0.008, profile


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the start estimate reads getrusage's CPU time")
def test_work_or_waiting_between_two_tasks_is_not_charged_or_deducted(monkeypatch):
    """Between two tasks the processor may burn CPU (a big object to decode) or sleep: a gap
    longer than a processor's own few microseconds takes a real reading, so neither shows up
    in the next task's CPU time (an estimate across it would add or subtract the gap)."""
    import scaler.worker.profiling as profiling
    monkeypatch.setattr(profiling, "_REARM_NS", 10 ** 12)  # no re-arm (which reads the clock too) in the gaps
    profiler = TaskProfiler()
    profiler.measure(lambda: None)
    _spin(0.02)  # CPU between the tasks: not the next task's
    _, after_work = profiler.measure(lambda: None)
    assert after_work.cpu_time_s < 0.005, after_work
    profiler.measure(lambda: None)
    time.sleep(0.02)  # no CPU between the tasks: must not be deducted from the next one
    _, after_sleep = profiler.measure(lambda: _spin(0.01))
    assert 0.009 <= after_sleep.cpu_time_s <= 0.015, after_sleep


def test_without_the_proc_files_a_task_reports_its_own_growth_not_the_lifetime_peak():
    """Where /proc/self/clear_refs cannot be used, the peak is getrusage's lifetime mark at
    both ends of a task: a task right after another must still start from a reading of it."""
    big = _touch(120 * MiB)  # the process's lifetime peak is now at least this
    del big
    profiler = TaskProfiler()
    profiler._close()  # as on a system without the /proc files
    profiler.measure(lambda: None)
    _, small = profiler.measure(lambda: len(_touch(8 * MiB)))
    assert small.memory_peak < 60 * MiB, small


class _Clock:
    """A fake ``perf_counter_ns`` that advances ``step`` ns per reading: a stream of tiny
    tasks with exact timings, whatever the machine is doing."""

    def __init__(self, step):
        self.now = 10 ** 12
        self.step = step

    def __call__(self):
        self.now += self.step
        return self.now


def _counting_getrusage(monkeypatch):
    import scaler.worker.profiling as profiling
    reads = []
    real = profiling._getrusage

    def getrusage(who):
        reads.append(who)
        return real(who)

    monkeypatch.setattr(profiling, "_getrusage", getrusage)
    return reads


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the end estimate follows getrusage's CPU reading")
def test_tiny_tasks_right_after_a_reading_pay_no_system_call(monkeypatch):
    """A task that ends within 50 µs of the last getrusage, with no wait in between, ran all
    along since that reading and cannot have faulted in enough to count: its CPU time is its
    wall time, its growth 0, and it makes no system call. A reading is still taken at least
    every 50 µs, so the estimate never drifts further."""
    import scaler.worker.profiling as profiling
    monkeypatch.setattr(profiling, "_perf_counter_ns", _Clock(3000))  # each reading 3 µs after the last
    monkeypatch.setattr(profiling, "_REARM_NS", 10 ** 12)
    reads = _counting_getrusage(monkeypatch)
    arms = []
    real_arm = TaskProfiler._arm
    monkeypatch.setattr(TaskProfiler, "_arm", lambda self: (arms.append(1), real_arm(self)))
    profiler = TaskProfiler()
    profiler.measure(lambda: None)
    del reads[:], arms[:]
    profiles = [profiler.measure(lambda: None)[1] for _ in range(90)]
    # A task (begin to end) and a gap are 3 µs each: a task's end reads only when the last
    # reading is over 50 µs old (at most every 9th task), and there is one at least that
    # often. (A re-arm, which reads too, follows a task during which this process faulted:
    # other threads of the test process may allocate at any time.)
    end_reads = len(reads) - len(arms)
    assert end_reads <= 90 // 8 and len(reads) >= 90 // 9, (end_reads, len(arms))
    for profile in profiles:
        assert profile.duration_s == pytest.approx(3e-6)
        # A task whose end read getrusage reports what the process faulted in meanwhile, and
        # other threads of this test process may allocate (a few pages under load).
        assert profile.memory_peak < MiB, profile
    estimated = [p for p in profiles if p.cpu_time_s == pytest.approx(3e-6)]
    assert len(estimated) >= 90 - len(reads), profiles
    assert all(p.memory_peak == 0 for p in estimated), estimated  # no reading: nothing counted


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the end estimate follows getrusage's CPU reading")
def test_after_a_wait_or_an_object_the_next_task_reads_at_its_end(monkeypatch):
    """The estimate holds only while the processor ran all along: after it waited (for tasks
    or sub-tasks) or received an object, the next task takes a fresh reading (at its end,
    or in the re-arm before it)."""
    import scaler.worker.profiling as profiling
    monkeypatch.setattr(profiling, "_perf_counter_ns", _Clock(1000))
    monkeypatch.setattr(profiling, "_REARM_NS", 10 ** 12)
    reads = _counting_getrusage(monkeypatch)
    profiler = TaskProfiler()
    profiler.measure(lambda: None)
    for interrupt in (profiler.waited, profiler.invalidate):
        profiler.measure(lambda: None)
        del reads[:]
        profiler.measure(lambda: None)
        assert reads == [], "a tiny task right after a reading was expected to estimate"
        interrupt()
        profiler.measure(lambda: None)
        assert reads, "%s: the next task must read getrusage" % interrupt.__name__


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the end estimate follows getrusage's CPU reading")
def test_a_parent_is_not_estimated_from_a_reading_taken_by_a_task_nested_in_it(monkeypatch):
    """A parent that waited for sub-tasks (running one of them on top of it, which read
    getrusage) and ends right after must read its own end: its wall time is mostly waiting,
    not CPU."""
    import scaler.worker.profiling as profiling
    clock = _Clock(1000)
    monkeypatch.setattr(profiling, "_perf_counter_ns", clock)
    monkeypatch.setattr(profiling, "_REARM_NS", 10 ** 12)
    reads = _counting_getrusage(monkeypatch)
    profiler = TaskProfiler()
    profiler.measure(lambda: None)
    parent = profiler.begin()
    clock.now += 20 * 10 ** 6  # 20 ms blocked for its children (a wait that did not call waited())
    profiler.measure(lambda: None)  # a child, run on top of it: reads getrusage at its end
    del reads[:]
    profile = profiling.ProfileResult.from_detail(profiler.end_detail(parent))
    assert reads, "the parent's end must read getrusage"
    assert profile.duration_s >= 0.02 and profile.cpu_time_s < 0.01, profile
