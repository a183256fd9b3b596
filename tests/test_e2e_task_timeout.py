"""--task-timeout-seconds / task_timeout_seconds: a task running longer is stopped, end to end."""

import os
import subprocess
import sys
import time

import pytest

from scaler import Client
from scaler.utility.exceptions import TaskTimeoutError

TIMEOUT = 120


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


def pid():
    return os.getpid()


def test_a_task_past_the_limit_fails_with_a_timeout_error_and_the_worker_goes_on(make_combo):
    combo = make_combo(n_workers=1, task_timeout_seconds=1)
    with Client(combo.get_address()) as client:
        before = client.submit(pid).result(timeout=TIMEOUT)
        started = time.monotonic()
        slow = client.submit(sleep_then, 60, "never")
        with pytest.raises(TaskTimeoutError) as info:
            slow.result(timeout=TIMEOUT)
        assert time.monotonic() - started < 60, "stopped, not waited for"
        assert isinstance(info.value, TimeoutError)
        assert slow.task_id.hex() in str(info.value) and "1s" in str(info.value)
        # The same (only) worker runs the next task, on a new processor.
        assert client.submit(sleep_then, 0.1, "next").result(timeout=TIMEOUT) == "next"
        assert client.submit(pid).result(timeout=TIMEOUT) != before


def test_tasks_within_the_limit_are_untouched(make_combo):
    combo = make_combo(n_workers=2, task_timeout_seconds=5)
    with Client(combo.get_address()) as client:
        assert client.map(sleep_then, [0.3] * 6, range(6)) == list(range(6))


def test_the_command_line_flag_reaches_the_workers(tmp_path):
    from e2e_support import free_port_pair, subprocess_env
    port = free_port_pair()
    address = "tcp://127.0.0.1:%d" % port
    scheduler = subprocess.Popen([sys.executable, "-m", "scaler.scheduler", address], env=subprocess_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cluster = subprocess.Popen([sys.executable, "-m", "scaler.cluster", address, "-n", "1",
                                "--task-timeout-seconds", "1"], env=subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with Client(address) as client:
            with pytest.raises(TaskTimeoutError):
                client.submit(sleep_then, 60, "never").result(timeout=TIMEOUT)
    finally:
        for proc in (cluster, scheduler):
            proc.terminate()
        for proc in (cluster, scheduler):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
