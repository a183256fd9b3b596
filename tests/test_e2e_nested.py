"""Tasks that submit tasks, and priorities, end to end (real scheduler, workers, processors).

The edge cases: one worker; more waiting parents than processors; a worker whose task
queue holds a single task; parents cancelled or killed while their children run.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from e2e_support import wait_until
from scaler import Client

TIMEOUT = 120


# --- task functions (module level: workers import them by name) ---------------------------

def fib(n):
    if n < 2:
        return n
    with Client() as client:
        a = client.submit(fib, n - 1)
        b = client.submit(fib, n - 2)
        return a.result() + b.result()


def fib_map(n):
    """The same through map (and its implicit waits)."""
    if n < 2:
        return n
    with Client() as client:
        return sum(client.map(fib_map, [n - 1, n - 2]))


def fib_cf_wait(n):
    """The same, waiting through ``concurrent.futures.wait`` (as code written for an
    executor does)."""
    import concurrent.futures
    if n < 2:
        return n
    with Client() as client:
        futures = [client.submit(fib_cf_wait, n - 1), client.submit(fib_cf_wait, n - 2)]
        done, not_done = concurrent.futures.wait(futures)
        assert not not_done
        return sum(f.result() for f in done)


def fib_as_completed(n):
    """The same through ``concurrent.futures.as_completed``, imported by name."""
    from concurrent.futures import as_completed
    if n < 2:
        return n
    with Client() as client:
        return sum(f.result() for f in as_completed([client.submit(fib_as_completed, n - 1),
                                                     client.submit(fib_as_completed, n - 2)]))


def first_completed_then_timeout():
    """FIRST_COMPLETED and a timeout keep their meaning when waiting inside a task, also for
    futures that are not tasks (one nobody will ever complete, here)."""
    import concurrent.futures
    never = concurrent.futures.Future()
    with Client() as client:
        quick = client.submit(abs, -1)
        done, not_done = concurrent.futures.wait([quick, never], return_when=concurrent.futures.FIRST_COMPLETED)
        started = time.monotonic()
        done_later, still = concurrent.futures.wait([never], timeout=0.3)
        waited = time.monotonic() - started
        try:
            list(concurrent.futures.as_completed([never], timeout=0.2))
            as_completed_timed_out = False
        except concurrent.futures.TimeoutError:
            as_completed_timed_out = True
        return done == {quick}, not_done == {never}, not done_later and still == {never}, waited >= 0.25, \
            as_completed_timed_out


def record(path, label):
    with open(path, "a") as f:
        f.write(label + "\n")
    return label


def parent_recording(path):
    record(path, "parent-start")
    with Client() as client:
        client.submit(record, path, "child").result()
    return record(path, "parent-end")


def wait_for_file(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return "released"


def sleeper_writing_pid(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(120)
    return "slept"


def parent_of_a_sleeper(path, die):
    with Client() as client:
        child = client.submit(sleeper_writing_pid, path)
        if die:
            wait_for_file(path)
            os.kill(os.getpid(), signal.SIGKILL)
        return child.result()


def uses_objects_and_graphs_inside(n):
    with Client() as client:
        ref = client.send_object(list(range(n)), name="numbers")
        total = client.submit(sum, ref).result()
        mapped = client.map(abs, [-1, -2])
        graph = client.get({"x": n, "y": (abs, "x")}, "y")
        return total, mapped, graph


def priority_inside():
    with Client() as client:
        from scaler.utility import task_context
        return task_context.priority, client.submit(own_priority).result()


def own_priority():
    from scaler.utility import task_context
    return task_context.priority


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid) as f:  # a zombie is gone for our purpose
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


# --- nested tasks ------------------------------------------------------------------------

@pytest.mark.parametrize("queue_size", [1000, 1], ids=["queue1000", "queue1"])
def test_recursive_fibonacci_finishes_on_one_worker(make_combo, queue_size):
    combo = make_combo(n_workers=1, per_worker_task_queue_size=queue_size)
    with Client(combo.get_address()) as client:
        assert client.submit(fib, 10).result(timeout=TIMEOUT) == 55


@pytest.mark.parametrize("parent", [fib_cf_wait, fib_as_completed], ids=["wait", "as_completed"])
def test_parents_waiting_through_concurrent_futures_run_their_children(make_combo, parent):
    """``concurrent.futures.wait``/``as_completed`` inside a task wait like ``result()``:
    the processor runs the children meanwhile, so one worker and more waiting parents
    than processors still finish."""
    combo = make_combo(n_workers=1, per_worker_task_queue_size=1)
    with Client(combo.get_address()) as client:
        assert client.submit(parent, 8).result(timeout=TIMEOUT) == 21
        assert [f.result(timeout=TIMEOUT) for f in [client.submit(parent, 6) for _ in range(3)]] == [8] * 3
        assert client.submit(first_completed_then_timeout).result(timeout=TIMEOUT) == (True,) * 5


@pytest.mark.parametrize("queue_size", [1000, 1], ids=["queue1000", "queue1"])
def test_more_waiting_parents_than_workers(make_combo, queue_size):
    combo = make_combo(n_workers=2, per_worker_task_queue_size=queue_size)
    with Client(combo.get_address()) as client:
        futures = [client.submit(fib, 7) for _ in range(6)]  # 6 parents, 2 processors, all wait
        assert [f.result(timeout=TIMEOUT) for f in futures] == [13] * 6
        assert client.map(fib_map, [8, 6, 9]) == [21, 8, 34]


def test_a_nested_task_runs_before_queued_top_level_tasks(make_combo, tmp_path):
    combo = make_combo(n_workers=1)
    path = str(tmp_path / "order")
    with Client(combo.get_address()) as client:
        parent = client.submit(parent_recording, path)
        later = [client.submit(record, path, "top%d" % i) for i in range(3)]
        assert parent.result(timeout=TIMEOUT) == "parent-end"
        for future in later:
            future.result(timeout=TIMEOUT)
    with open(path) as f:
        assert f.read().split() == ["parent-start", "child", "parent-end", "top0", "top1", "top2"]


def test_send_object_map_and_get_work_inside_a_task(client):
    assert client.submit(uses_objects_and_graphs_inside, 10).result(timeout=TIMEOUT) == (45, [1, 2], 10)


def test_a_child_gets_its_parents_priority_plus_one(client):
    assert client.submit(priority_inside).result(timeout=TIMEOUT) == (0, 1)
    assert client.submit_verbose(priority_inside, (), {}, priority=7).result(timeout=TIMEOUT) == (7, 8)


@pytest.mark.parametrize("die", [False, True], ids=["cancelled", "killed"])
def test_a_parent_that_ends_early_cancels_its_children(make_combo, tmp_path, die):
    combo = make_combo(n_workers=2)
    path = str(tmp_path / "child.pid")
    with Client(combo.get_address()) as client:
        parent = client.submit(parent_of_a_sleeper, path, die)
        wait_until(lambda: os.path.exists(path), 60, "the child to start")
        with open(path) as f:
            child_pid = int(f.read())
        if die:
            with pytest.raises(Exception, match="processor died"):
                parent.result(timeout=TIMEOUT)
        else:
            assert parent.cancel()
        # The child's processor is stopped (and replaced): its process goes away long
        # before the child's 120 s sleep would end.
        wait_until(lambda: not pid_alive(child_pid), 60, "the child's processor to be stopped")
        assert client.submit(record, str(tmp_path / "after"), "ok").result(timeout=TIMEOUT) == "ok"


# --- priorities ----------------------------------------------------------------------------

def test_priority_orders_queued_tasks_and_equal_ones_keep_submission_order(make_combo, tmp_path):
    combo = make_combo(n_workers=1)
    gate = str(tmp_path / "gate")
    path = str(tmp_path / "order")
    with Client(combo.get_address()) as client:
        blocker = client.submit(wait_for_file, gate)
        low = client.map_futures(record, [path] * 2, ["low1", "low2"], priority=-1)
        mid = [client.submit(record, path, "mid1"), client.submit(record, path, "mid2")]
        high = [client.submit_verbose(record, (path, "high%d" % i), {}, priority=5) for i in (1, 2)]
        star = client.starmap_futures(record, [(path, "star")], priority=3)
        with open(gate, "w"):
            pass
        assert blocker.result(timeout=TIMEOUT) == "released"
        for future in low + mid + high + star:
            future.result(timeout=TIMEOUT)
    with open(path) as f:
        assert f.read().split() == ["high1", "high2", "star", "mid1", "mid2", "low1", "low2"]


def test_map_and_starmap_take_a_priority(client, tmp_path):
    path = str(tmp_path / "x")
    assert client.map(record, [path], ["a"], priority=4) == ["a"]
    assert client.starmap(record, [(path, "b")], priority=-4) == ["b"]


@pytest.mark.parametrize("bad, error", [("1", TypeError), (True, TypeError), (1.5, TypeError),
                                        (2 ** 63, ValueError), (-2 ** 63 - 1, ValueError)])
def test_a_bad_priority_is_refused_at_submit(client, bad, error):
    with pytest.raises(error, match="priority"):
        client.submit_verbose(own_priority, (), {}, priority=bad)
    with pytest.raises(error, match="priority"):
        client.map(own_priority, [], priority=bad)


# --- hard_processor_suspend ----------------------------------------------------------------

def test_hard_processor_suspend_is_refused_with_a_reason(make_combo):
    with pytest.raises(ValueError, match="hard_processor_suspend"):
        make_combo(n_workers=1, hard_processor_suspend=True)
    out = subprocess.run([sys.executable, "-m", "scaler.cluster", "tcp://127.0.0.1:1", "-hps"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert out.returncode != 0
    assert b"hard_processor_suspend = true is not supported" in out.stdout
