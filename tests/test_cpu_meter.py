"""The CPU figure of worker heartbeats (utility/process.py ``CpuMeter``), with a fake clock.

Amounts of CPU time are compared, never wall-clock durations.
"""

import os
import subprocess
import sys
import time

import pytest

from scaler.utility.process import CpuMeter, cpu_seconds


class Clock:
    def __init__(self):
        self.now = 50.0

    def __call__(self):
        return self.now


def burn(seconds_of_cpu):
    start = cpu_seconds()
    while cpu_seconds() - start < seconds_of_cpu:
        sum(range(1000))


def test_own_cpu_is_counted_as_percent_of_the_interval():
    clock = Clock()
    meter = CpuMeter(clock)
    burn(0.05)
    clock.now += 1.0
    assert meter.percent() >= 5.0
    clock.now += 1000.0  # idle (for this process) over a long interval: close to 0
    assert meter.percent() < 5.0


def test_no_time_passed_reads_zero():
    clock = Clock()
    meter = CpuMeter(clock)
    burn(0.01)
    assert meter.percent() == 0.0


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="the live child is read from /proc")
def test_a_live_child_is_counted_once_even_after_it_is_reaped():
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                              "start = time.process_time()\n"
                              "while time.process_time() - start < 0.3: pass\n"
                              "sys.stdin.read()\n"], stdin=subprocess.PIPE)
    try:
        clock = Clock()
        meter = CpuMeter(clock)
        while cpu_seconds(child.pid) < 0.3:  # the child burns 0.3 s of CPU, then waits
            time.sleep(0.01)
        clock.now += 1.0
        assert meter.percent(child.pid) >= 30.0
        child.stdin.close()
        child.wait()
        clock.now += 1.0
        # Its 0.3 s now show in this process's reaped-children time: not counted again.
        assert meter.percent(None) < 15.0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_cpu_seconds_of_a_process_that_does_not_exist_is_zero():
    assert cpu_seconds(2 ** 22 + 12345) == 0.0
