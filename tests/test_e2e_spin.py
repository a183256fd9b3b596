"""Polling before sleeping (io/spin.py) in a real cluster: quick round trips make the
scheduler and the client's waiting thread poll instead of sleeping, and an idle cluster
still sleeps."""

import os
import threading
import time

import pytest

from e2e_support import descendants, role


def noop(x):
    return x


def _cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sleeps(path):
    """Voluntary context switches (times the thread went to sleep) of /proc/.../status."""
    with open(path) as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in %s" % path)


def _process_sleeps(pid):
    return sum(_sleeps("/proc/%d/task/%s/status" % (pid, tid)) for tid in os.listdir("/proc/%d/task" % pid))


def _combo_tree(combo):
    roots = [combo._scheduler.pid, combo._worker_manager_process.pid]
    return roots + [stat.pid for root in roots for stat in descendants(root)]


@pytest.mark.parametrize("budget_us", ["0", "5000"])
def test_quick_round_trips_are_polled_for_not_slept_on(make_combo, monkeypatch, budget_us):
    from scaler import Client

    # A budget far above any round trip here, so that polling catches every answer even on
    # a slow machine; 0 is the control (one sleep per answer), so the counts below can fail.
    monkeypatch.setenv("SCALER_SPIN_MICROSECONDS", budget_us)
    combo = make_combo(n_workers=2)
    scheduler = combo._scheduler.pid
    me = "/proc/self/task/%d/status" % threading.get_native_id() if hasattr(threading, "get_native_id") else None
    with Client(combo.get_address()) as client:
        for _ in range(100):  # the averages of recent waits settle
            assert client.submit(noop, 1).result(timeout=60) == 1
        trips = 300
        scheduler_before = _process_sleeps(scheduler)
        mine_before = _sleeps(me) if me else 0
        for _ in range(trips):
            assert client.submit(noop, 1).result(timeout=60) == 1
        scheduler_per_trip = (_process_sleeps(scheduler) - scheduler_before) / trips
        mine_per_trip = ((_sleeps(me) - mine_before) / trips) if me else None
    if budget_us == "0":
        assert scheduler_per_trip >= 0.9  # woken for the submit and for the result
        assert mine_per_trip is None or mine_per_trip >= 0.9
    else:
        assert scheduler_per_trip < 0.5, scheduler_per_trip
        assert mine_per_trip is None or mine_per_trip < 0.5, mine_per_trip


def test_an_idle_cluster_sleeps_after_a_run_of_quick_round_trips(make_combo):
    from scaler import Client

    combo = make_combo(n_workers=2)
    with Client(combo.get_address()) as client:
        for _ in range(1000):  # quick answers: the scheduler and this thread poll before they sleep
            assert client.submit(noop, 1).result(timeout=60) == 1
        pids = _combo_tree(combo)
        assert "scheduler" in [role(pid) for pid in pids]
        before = {pid: _cpu_seconds(pid) for pid in pids}
        own_before = time.process_time()  # the client: this thread and its I/O thread
        time.sleep(2.0)
        spent = {"%s %d" % (role(pid), pid): _cpu_seconds(pid) - before[pid] for pid in pids}
        spent["client"] = time.process_time() - own_before
        # Nothing to wait for: every process sleeps (a poller that did not stop would spend
        # the two seconds; timers and heartbeats cost a few milliseconds).
        assert all(seconds < 0.5 for seconds in spent.values()), spent
        assert client.submit(noop, 2).result(timeout=60) == 2
