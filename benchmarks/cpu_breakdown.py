"""Where the time goes: CPU seconds spent per process for a no-op ``map``.

Runs a SchedulerClusterCombo with N workers, maps a no-op over M tasks and reads each
process's user+system CPU time from /proc/<pid>/stat before and after (Linux only).
Prints microseconds of CPU per task for the client, the scheduler (with its in-process
object storage), each worker agent and each processor.

    python benchmarks/cpu_breakdown.py [--tasks 20000] [--workers 2] [--profiling] [--json]

``--profiling`` maps through a ``Client(profiling=True)`` (what profiling costs, per process);
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


def noop(x):
    return x


def processes():
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
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]), cmdline)
    return table


def descendants(root, table):
    found = [root]
    for pid in found:
        found.extend(p for p, (ppid, _, _) in table.items() if ppid == pid and p not in found)
    return found


def role(cmdline):
    for module, name in ((".scheduler", "scheduler"), (".worker.processor", "processor"), (".worker ", "agent"),
                         (".cluster", "worker manager")):
        if module in cmdline:
            return name
    return "client"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profiling", action="store_true", help="a Client(profiling=True): what profiling costs")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    combo = SchedulerClusterCombo(n_workers=args.workers, logging_level="WARNING")
    try:
        with Client(combo.get_address(), profiling=args.profiling) as client:
            client.map(noop, range(200))  # warm up every worker
            table = processes()
            pids = descendants(os.getpid(), table)
            before = {pid: table[pid][1] for pid in pids}
            start = time.perf_counter()
            client.map(noop, range(args.tasks))
            elapsed = time.perf_counter() - start
            after = processes()
    finally:
        combo.shutdown()
    rows = []
    for pid in pids:
        if pid not in after:
            continue
        seconds = (after[pid][1] - before[pid]) / TICKS
        rows.append({"pid": pid, "role": role(after[pid][2]), "cpu_s": seconds,
                     "cpu_us_per_task": seconds * 1e6 / args.tasks})
    total = sum(row["cpu_s"] for row in rows)
    if args.json:
        print(json.dumps({"tasks": args.tasks, "workers": args.workers, "seconds": elapsed,
                          "tasks_per_s": args.tasks / elapsed, "processes": rows,
                          "all": {"role": "all", "cpu_s": total, "cpu_us_per_task": total * 1e6 / args.tasks}}))
        return
    print("%d no-op tasks, %d workers: %.2f s, %.0f tasks/s" % (args.tasks, args.workers, elapsed,
                                                               args.tasks / elapsed))
    print("%-16s %8s %14s" % ("process", "CPU s", "CPU us/task"))
    for row in rows:
        print("%-16s %8.2f %14.1f" % (row["role"], row["cpu_s"], row["cpu_us_per_task"]))
    print("%-16s %8.2f %14.1f" % ("all", total, total * 1e6 / args.tasks))

if __name__ == "__main__":
    main()
