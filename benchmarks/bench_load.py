"""Load: many clients and many thin protocol-level workers against one scheduler.

    python benchmarks/bench_load.py                     # 64 clients x 5 000 tasks, 200 thin workers
    python benchmarks/bench_load.py --clients 8 --tasks 1000 --workers 50

The workers (``tests/thin_workers.py``) register like real ones and answer every task at
once, so the scheduler is what is under load. Every client checks that each of its
futures resolved exactly once, to its own task id; the workers count tasks sent twice.
Prints the scheduler's CPU time per task and its peak RSS.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLIENTS = textwrap.dedent("""
    import json, sys, threading
    from scaler import Client

    def noop(x):
        return x

    address, clients, tasks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    report = {"ok": 0, "bad": 0, "errors": []}
    lock = threading.Lock()

    def one():
        try:
            with Client(address, timeout_seconds=300) as client:
                futures = client.map_futures(noop, range(tasks))
                ok = sum(1 for f in futures if f.result(timeout=600) == f.task_id)
            with lock:
                report["ok"] += ok
                report["bad"] += tasks - ok
        except Exception as exc:
            with lock:
                report["errors"].append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("REPORT " + json.dumps(report), flush=True)
""")


def _free_port():
    while True:
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        if port < 65000:
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def run_load(clients=64, tasks=5000, workers=200, processes=8, timeout=600.0, env=None):
    """Run the load; returns the figures (raises AssertionError if anything was lost)."""
    env = dict(env or os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    port = _free_port()
    address = "tcp://127.0.0.1:%d" % port
    children = []
    tmp = tempfile.mkdtemp(prefix="scaler-load-")
    try:
        scheduler = subprocess.Popen([sys.executable, "-m", "scaler.scheduler", address, "-ll", "WARNING",
                                      "--monitor-address", "tcp://127.0.0.1:%d" % _free_port()],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        children.append(scheduler)
        time.sleep(0.5)
        worker_report = os.path.join(tmp, "workers.json")
        thin = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "thin_workers.py"), address,
                                 str(workers), str(timeout), worker_report], env=env)
        children.append(thin)
        time.sleep(1.0)
        script = os.path.join(tmp, "clients.py")
        with open(script, "w") as f:
            f.write(CLIENTS)
        per_process = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
        cpu_before = _cpu_seconds(scheduler.pid)
        started = time.monotonic()
        runs = [subprocess.Popen([sys.executable, script, address, str(n), str(tasks)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for n in per_process if n]
        children.extend(runs)
        ok = bad = 0
        errors = []
        for run in runs:
            out, _ = run.communicate(timeout=timeout)
            if "REPORT " not in out:
                raise AssertionError("a client process failed:\n" + out[-3000:])
            report = json.loads(out.split("REPORT ", 1)[1].splitlines()[0])
            ok += report["ok"]
            bad += report["bad"]
            errors += report["errors"]
        seconds = time.monotonic() - started
        cpu = _cpu_seconds(scheduler.pid) - cpu_before
        peak = _peak_rss(scheduler.pid)
        thin.terminate()
        thin.wait(30)
        with open(worker_report) as f:
            workers_seen = json.load(f)
        total = clients * tasks
        figures = {"clients": clients, "tasks_per_client": tasks, "workers": workers, "total": total,
                   "ok": ok, "bad": bad, "errors": errors, "seconds": seconds, "tasks_per_s": total / seconds,
                   "scheduler_cpu_us_per_task": cpu / total * 1e6, "scheduler_peak_rss_mib": peak / 2 ** 20,
                   "workers_registered": workers_seen["workers"], "tasks_at_workers": workers_seen["tasks"],
                   "duplicates_at_workers": workers_seen["duplicates"]}
        return figures
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.kill()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                pass


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--processes", type=int, default=8, help="client processes (clients are threads in them)")
    args = parser.parse_args(argv)
    figures = run_load(args.clients, args.tasks, args.workers, args.processes)
    print("load: %(clients)d clients x %(tasks_per_client)d tasks, %(workers)d thin workers" % figures)
    rows = [("tasks resolved correctly", "%d / %d" % (figures["ok"], figures["total"])),
            ("tasks sent to a worker twice", "%d" % figures["duplicates_at_workers"]),
            ("wall time", "%.1f s (%.0f tasks/s)" % (figures["seconds"], figures["tasks_per_s"])),
            ("scheduler CPU per task", "%.1f us" % figures["scheduler_cpu_us_per_task"]),
            ("scheduler peak RSS", "%.0f MiB" % figures["scheduler_peak_rss_mib"])]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print("  %-*s  %s" % (width, key, value))
    if figures["errors"]:
        print("errors:", figures["errors"][:5])
    return 0 if figures["ok"] == figures["total"] and not figures["duplicates_at_workers"] else 1


if __name__ == "__main__":
    sys.exit(main())
