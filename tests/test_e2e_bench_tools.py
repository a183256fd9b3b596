"""The measuring tools of benchmarks/, run small on real processes.

cpu_breakdown.py on a real cluster: every process is found and given its role, and the
wake-ups it counts are the ones the design implies. bench_hops.py: a chain of processes
passes a frame there and back. No wall-clock figure is checked, only counts and shapes:
one task at a time, each process on the path must go to sleep between round trips
(nothing else is queued), so each is woken at least once per trip."""

import json
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "cpu_breakdown.py")
HOPS = os.path.join(REPO_ROOT, "benchmarks", "bench_hops.py")

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc (Linux only)")


def test_counts_cpu_and_wakeups_per_process():
    # Polling before sleeping (io/spin.py) off: each hop of a round trip is then a wake-up of
    # the process it reaches, which is what the counts below check.
    env = dict(os.environ, SCALER_SPIN_MICROSECONDS="0")
    done = subprocess.run([sys.executable, SCRIPT, "--tasks", "400", "--round-trips", "60", "--ppe", "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    roles = sorted(row["role"] for row in report["processes"])
    assert roles == ["agent", "agent", "client", "processor", "processor", "scheduler", "worker manager"]
    assert report["tasks"] == 400 and report["tasks_per_s"] > 0

    trips = report["round_trips"]
    assert trips["count"] == 60 and trips["median_us"] > 0

    def per_trip(role):
        return sum(row["wakeups_per_task"] for row in trips["processes"] if row["role"] == role)

    # (>= 0.9, not 1: a wake-up landing just outside the measured window is not counted)
    for role in ("scheduler", "processor", "client"):
        assert per_trip(role) >= 0.9, (role, trips["processes"])
    # The agents are off a task's way: the scheduler and the processor talk directly.
    assert per_trip("agent") < 0.1, trips["processes"]
    assert trips["all"]["wakeups_per_task"] == pytest.approx(sum(r["wakeups_per_task"] for r in trips["processes"]))
    assert all(row["cpu_s"] >= 0 for row in trips["processes"])

    ppe = report["ppe"]
    assert sorted({row["role"] for row in ppe["map"]["processes"]}) == ["PPE worker", "caller (PPE)"]
    assert len(ppe["map"]["processes"]) == 3 and ppe["round_trips"]["count"] == 60


def test_bench_hops_times_chains_of_processes():
    done = subprocess.run([sys.executable, HOPS, "--processes", "2", "4", "--trips", "50", "--rounds", "2"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows] == [("2", "2"), ("4", "6")], done.stdout
    assert all(float(row[2]) > 0 and row[3] == "us" for row in rows)
    bad = subprocess.run([sys.executable, HOPS, "--processes", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert bad.returncode == 2 and "at least 2" in bad.stderr
