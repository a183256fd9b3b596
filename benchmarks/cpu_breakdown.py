"""Where the time goes: CPU time and wake-ups per process, for a no-op ``map`` and for
``submit().result()`` round trips.

Runs a SchedulerClusterCombo with N workers and reads, before and after each workload, every
process's time on a CPU (``/proc/<pid>/task/*/schedstat``, in nanoseconds; the coarser
``stat`` ticks where the kernel has no schedstat) and its voluntary context switches (each
one is the process going to sleep, to be woken up again), summed over its threads (Linux
only). Prints, for the client, the scheduler (with its in-process object storage), each
worker agent and each processor: CPU µs per task and wake-ups per task.

    python benchmarks/cpu_breakdown.py [--tasks 20000] [--round-trips 2000] [--workers 2]
                                       [--profiling] [--ppe] [--json]

The map shows what each task costs where the pipeline is full (few wake-ups, messages
handled in batches); the round trips show the opposite case, one task at a time, where each
process on the path is woken for one message. ``--round-trips 0`` skips them.
``--ppe`` measures ``concurrent.futures.ProcessPoolExecutor`` the same way, after scaler
(its calling process with its feeder and result threads, then its workers);
``--profiling`` uses a ``Client(profiling=True)`` (what profiling costs, per process);
``--json`` prints the same figures as one JSON document (``bench_peers.py --cpu-profile``
runs it that way).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaler import Client, SchedulerClusterCombo  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def noop(x=None):
    return x


def _thread_figures(pid):
    """(CPU seconds, voluntary context switches) of one process, over all its threads."""
    cpu = 0.0
    switches = 0
    try:
        threads = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return None
    for tid in threads:
        base = "/proc/%d/task/%s/" % (pid, tid)
        try:
            with open(base + "schedstat") as f:
                cpu += int(f.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            try:
                with open(base + "stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                cpu += (int(fields[11]) + int(fields[12])) / TICKS
            except (OSError, ValueError, IndexError):
                continue
        try:
            with open(base + "status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        switches += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return cpu, switches


def processes():
    """pid -> (parent pid, command line, name) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        table[int(entry)] = (int(stat[stat.rindex(")") + 2:].split()[1]), cmdline, name)
    return table


def descendants(root, table):
    found = [root]
    for pid in found:
        found.extend(p for p, (ppid, _, _) in table.items() if ppid == pid and p not in found)
    return found


def role(cmdline, comm=""):
    if comm == "scaler-proc":  # forked (its command line is its agent's): named so
        return "processor"
    if comm == "scaler-worker":  # forked from its manager
        return "agent"
    for module, name in ((".scheduler", "scheduler"), (".worker.processor", "processor"), (".worker ", "agent"),
                         (".cluster", "worker manager")):
        if module in cmdline:
            return name
    return "client"


def every_process(workers, timeout=60.0):
    """The pids of this process and its descendants, and their roles, once each worker has
    started its processor (a worker still importing would be missed)."""
    deadline = time.monotonic() + timeout
    while True:
        table = processes()
        pids = descendants(os.getpid(), table)
        roles = {pid: role(table[pid][1], table[pid][2]) for pid in pids}
        if sum(1 for name in roles.values() if name == "processor") >= workers or time.monotonic() > deadline:
            return pids, roles
        time.sleep(0.05)


def measure(pids, roles, count, run):
    """Run ``run()`` and return the figures per process, per one of ``count`` tasks."""
    before = {pid: _thread_figures(pid) for pid in pids}
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    after = {pid: _thread_figures(pid) for pid in pids}
    rows = []
    for pid in pids:
        if before[pid] is None or after[pid] is None:
            continue
        cpu = after[pid][0] - before[pid][0]
        wakeups = after[pid][1] - before[pid][1]
        rows.append({"pid": pid, "role": roles[pid], "cpu_s": cpu, "cpu_us_per_task": cpu * 1e6 / count,
                     "wakeups_per_task": wakeups / count})
    total = {"role": "all", "cpu_s": sum(r["cpu_s"] for r in rows),
             "wakeups_per_task": sum(r["wakeups_per_task"] for r in rows)}
    total["cpu_us_per_task"] = total["cpu_s"] * 1e6 / count
    return {"seconds": elapsed, "processes": rows, "all": total}


def ppe_figures(workers, tasks, count):
    """The same two workloads on a ProcessPoolExecutor (map with chunksize 1, its default)."""
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(noop, range(200)))  # starts every worker
        me = os.getpid()
        pids = descendants(me, processes())
        roles = {pid: "caller (PPE)" if pid == me else "PPE worker" for pid in pids}
        mapped = measure(pids, roles, tasks, lambda: list(pool.map(noop, range(tasks))))
        latency = None
        if count:
            round_trips(pool, min(200, count))
            median = []
            latency = measure(pids, roles, count, lambda: median.append(round_trips(pool, count)))
            latency["count"] = count
            latency["median_us"] = median[0]
    mapped["tasks_per_s"] = tasks / mapped["seconds"]
    return {"map": mapped, "round_trips": latency}


def round_trips(client, count):
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        client.submit(noop).result()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2] * 1e6


def format_rows(figures, unit):
    lines = ["%-16s %8s %14s %14s" % ("process", "CPU s", "CPU us/" + unit, "wake-ups/" + unit)]
    for row in figures["processes"] + [figures["all"]]:
        lines.append("%-16s %8.2f %14.1f %14.2f" % (row["role"], row["cpu_s"], row["cpu_us_per_task"],
                                                   row["wakeups_per_task"]))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000, help="no-op tasks in the map")
    parser.add_argument("--round-trips", type=int, default=2000, help="submit(noop).result() round trips (0: none)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profiling", action="store_true", help="a Client(profiling=True): what profiling costs")
    parser.add_argument("--ppe", action="store_true", help="also measure a ProcessPoolExecutor the same way")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.tasks < 1 or args.round_trips < 0 or args.workers < 1:
        parser.error("--tasks and --workers must be at least 1, --round-trips at least 0")
    combo = SchedulerClusterCombo(n_workers=args.workers, logging_level="WARNING")
    try:
        with Client(combo.get_address(), profiling=args.profiling) as client:
            pids, roles = every_process(args.workers)
            client.map(noop, range(200))  # warm up every worker
            mapped = measure(pids, roles, args.tasks, lambda: client.map(noop, range(args.tasks)))
            latency = None
            if args.round_trips:
                round_trips(client, min(200, args.round_trips))  # warm
                median = []
                latency = measure(pids, roles, args.round_trips,
                                  lambda: median.append(round_trips(client, args.round_trips)))
                latency["count"] = args.round_trips
                latency["median_us"] = median[0]
    finally:
        combo.shutdown()
    document = {"tasks": args.tasks, "workers": args.workers, "seconds": mapped["seconds"],
                "tasks_per_s": args.tasks / mapped["seconds"], "processes": mapped["processes"],
                "all": mapped["all"], "round_trips": latency}
    if args.ppe:
        document["ppe"] = ppe_figures(args.workers, args.tasks, args.round_trips)
    if args.json:
        print(json.dumps(document))
        return
    print("%d no-op tasks, %d workers: %.2f s, %.0f tasks/s" % (args.tasks, args.workers, mapped["seconds"],
                                                               args.tasks / mapped["seconds"]))
    print("\n".join(format_rows(mapped, "task")))
    if latency is not None:
        print("\n%d round trips, one at a time: median %.0f us" % (latency["count"], latency["median_us"]))
        print("\n".join(format_rows(latency, "trip")))
    if args.ppe:
        ppe = document["ppe"]
        print("\nProcessPoolExecutor: %d no-op tasks (chunksize 1): %.2f s, %.0f tasks/s"
              % (args.tasks, ppe["map"]["seconds"], ppe["map"]["tasks_per_s"]))
        print("\n".join(format_rows(ppe["map"], "task")))
        if ppe["round_trips"] is not None:
            print("\nProcessPoolExecutor: %d round trips: median %.0f us"
                  % (ppe["round_trips"]["count"], ppe["round_trips"]["median_us"]))
            print("\n".join(format_rows(ppe["round_trips"], "trip")))


if __name__ == "__main__":
    main()
