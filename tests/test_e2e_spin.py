"""Polling before sleeping (io/spin.py) in a real cluster: quick round trips make the
scheduler and the waiting client thread poll, and an idle cluster still sleeps."""

import os
import time

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


def test_an_idle_cluster_sleeps_after_a_run_of_quick_round_trips(make_combo):
    from scaler import Client

    combo = make_combo(n_workers=2)
    with Client(combo.get_address()) as client:
        for _ in range(1000):  # quick answers: the scheduler and this thread poll before they sleep
            assert client.submit(noop, 1).result(timeout=60) == 1
        pids = [stat.pid for stat in descendants(os.getpid())]
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
