#!/usr/bin/env python3
"""Benchmark scaler against concurrent.futures.ProcessPoolExecutor.

Runs the same workloads, with the same number of workers, on a local scaler
cluster (``SchedulerClusterCombo``) and on a ``ProcessPoolExecutor``, all
inside this one process tree, then prints a plain-text table and, optionally,
writes the figures to a JSON file.

Workloads
  1. map throughput: N no-op tasks (default 20 000) through ``client.map`` vs
     ``pool.map(..., chunksize=1)``; PPE is also run with a batched chunksize
     (multiprocessing.Pool's heuristic) for context.            -> tasks/s
  2. round-trip latency of ``submit(noop, i).result()``: 300 sequential calls
     after a warm-up, median and p99 (nearest rank).             -> ms
  3. start-up: from the ``SchedulerClusterCombo(...)`` / ``ProcessPoolExecutor(...)``
     constructor to the first result of ``submit(noop, 1)``.     -> s
  4. a 200 MB payload used by 10 tasks that return ``len(payload)``: scaler
     sends it once with ``send_object`` and passes the reference; PPE passes
     the bytes as the argument of each task.                     -> s

Usage
  python3 benchmarks/bench_vs_processpool.py                  # full run, 2 workers
  python3 benchmarks/bench_vs_processpool.py --workers 4 --json out.json
  python3 benchmarks/bench_vs_processpool.py --quick          # small sizes (CI smoke)
  python3 benchmarks/bench_vs_processpool.py --only-processpool

Exit status: 0 if every workload ran, 1 if any workload failed or timed out,
2 on a usage / import error. A MISS against a target does not change the exit
status.

Only the standard library (plus cloudpickle, which scaler itself uses) is
needed. The task functions are defined at the top level of this script, so
when it runs as ``__main__`` cloudpickle ships them to scaler workers by value
and the workers need not be able to import this file.
"""

import argparse
import contextlib
import gc
import json
import math
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
# Task functions (top level: pickled by value from __main__ for scaler, and
# importable from the main module for ProcessPoolExecutor under any start
# method).
# ---------------------------------------------------------------------------


def noop(x):
    return x


def payload_len(payload):
    return len(payload)


def graph_leaf(i):
    return i + 1


def graph_pair(a, b):
    return a + b


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

FULL_SIZES = {
    "map_tasks": 20000,
    "latency_warmup": 20,
    "latency_calls": 300,
    "payload_bytes": 200 * 10 ** 6,
    "payload_tasks": 10,
    "graph_leaves": 1000,
}

QUICK_SIZES = {
    "map_tasks": 2000,
    "latency_warmup": 10,
    "latency_calls": 50,
    "payload_bytes": 20 * 10 ** 6,
    "payload_tasks": 10,
    "graph_leaves": 200,
}

# Targets from the issue.
TARGET_LATENCY_MEDIAN_MS = 1.0
TARGET_STARTUP_S = 1.5
TARGET_PAYLOAD_S = 3.0
TARGET_PAYLOAD_BYTES = 200 * 10 ** 6
TARGET_PAYLOAD_TASKS = 10

SCALER = "scaler"
PPE = "processpool"
ENGINES = (SCALER, PPE)

# Workload keys, in table order.
W_MAP = "map_throughput"
W_MAP_BATCHED = "map_throughput_batched"
W_LAT = "latency"
W_STARTUP = "startup_to_first_result"
W_PAYLOAD = "payload"
W_GRAPH = "graph"
W_PROFILED = "map_profiling_overhead"
TARGET_GRAPH_NODES_PER_S = 5000.0
TARGET_PROFILING_OVERHEAD = 0.10  # profiling=True costs < 10 % of map throughput
PROFILING_ROUNDS = 16


def batched_chunksize(n_items, n_workers):
    """multiprocessing.Pool.map's default chunksize heuristic."""
    chunksize, extra = divmod(n_items, n_workers * 4)
    if extra:
        chunksize += 1
    return max(1, chunksize)


def log(message):
    sys.stderr.write("[bench] %s\n" % message)
    sys.stderr.flush()


# ---------------------------------------------------------------------------
# Per-workload deadline (SIGALRM raises in the main thread, which interrupts
# blocking Future.result() / lock waits on POSIX).
# ---------------------------------------------------------------------------


class WorkloadTimeout(Exception):
    pass


class Deadline(object):
    def __init__(self, seconds, what):
        self.seconds = seconds
        self.what = what
        self._armed = False
        self._old_handler = None

    def _handler(self, signum, frame):
        raise WorkloadTimeout("%s did not finish within %.0f s" % (self.what, self.seconds))

    def __enter__(self):
        if (
            self.seconds
            and self.seconds > 0
            and hasattr(signal, "SIGALRM")
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
        ):
            self._old_handler = signal.signal(signal.SIGALRM, self._handler)
            signal.setitimer(signal.ITIMER_REAL, float(self.seconds))
            self._armed = True
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old_handler)
            self._armed = False
        return False


# ---------------------------------------------------------------------------
# Measurements (engine-agnostic where the APIs coincide)
# ---------------------------------------------------------------------------


class BenchError(Exception):
    pass


def _check(condition, message):
    if not condition:
        raise BenchError(message)


def nearest_rank(sorted_values, pct):
    if not sorted_values:
        return float("nan")
    rank = int(math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def measure_latency(submit, warmup, calls):
    """``submit`` is client.submit or pool.submit; both return a Future."""
    for i in range(warmup):
        _check(submit(noop, i).result() == i, "latency warm-up returned a wrong result")
    samples = []
    perf = time.perf_counter
    for i in range(calls):
        t0 = perf()
        result = submit(noop, i).result()
        samples.append(perf() - t0)
        _check(result == i, "latency call returned a wrong result")
    ms = sorted(s * 1000.0 for s in samples)
    return {
        "median_ms": statistics.median(ms),
        "p99_ms": nearest_rank(ms, 99),
        "mean_ms": statistics.mean(ms),
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "warmup_calls": warmup,
        "calls": calls,
    }


def _throughput_result(n, seconds, **extra):
    out = {"tasks_per_s": n / seconds, "seconds": seconds, "tasks": n}
    out.update(extra)
    return out


def measure_scaler_map(client, n):
    expected = list(range(n))
    t0 = time.perf_counter()
    results = client.map(noop, range(n))
    seconds = time.perf_counter() - t0
    _check(list(results) == expected, "client.map returned wrong results")
    return _throughput_result(n, seconds)


def measure_profiling_overhead(client, profiled_client, n, rounds=PROFILING_ROUNDS):
    """The same map through a plain and a profiling client, back to back, ``rounds`` times:
    what profiling=True costs. Judged on the median of the per-round ratios (each pair runs
    within a second, so the machine's slow drifts cancel); the best of each side is
    reported beside it."""
    plain, profiled = [], []
    for round_number in range(rounds):
        if round_number % 2:  # every other round profiled first: what the second map of a pair pays cancels out
            profiled.append(measure_scaler_map(profiled_client, n)["tasks_per_s"])
            plain.append(measure_scaler_map(client, n)["tasks_per_s"])
        else:
            plain.append(measure_scaler_map(client, n)["tasks_per_s"])
            profiled.append(measure_scaler_map(profiled_client, n)["tasks_per_s"])
    futures = profiled_client.map_futures(noop, range(3))
    _check(all(f.result() == i and f.profiling_info().duration_s >= 0 for i, f in enumerate(futures)),
           "the profiling client's tasks carry no profile")
    best_plain, best_profiled = max(plain), max(profiled)
    paired = sorted(1.0 - b / a for a, b in zip(plain, profiled))
    return {"tasks_per_s": best_profiled, "plain_tasks_per_s": best_plain,
            "overhead": statistics.median(paired), "overhead_best_of": 1.0 - best_profiled / best_plain,
            "rounds": rounds, "plain_all": plain, "profiled_all": profiled}


def measure_ppe_map(pool, n, chunksize):
    expected = list(range(n))
    t0 = time.perf_counter()
    results = list(pool.map(noop, range(n), chunksize=chunksize))
    seconds = time.perf_counter() - t0
    _check(results == expected, "pool.map returned wrong results")
    return _throughput_result(n, seconds, chunksize=chunksize)


def measure_scaler_payload(client, size, n_tasks):
    payload = bytes(size)
    gc.collect()
    t0 = time.perf_counter()
    ref = client.send_object(payload)
    t_sent = time.perf_counter()
    futures = [client.submit(payload_len, ref) for _ in range(n_tasks)]
    results = [f.result() for f in futures]
    t1 = time.perf_counter()
    _check(results == [size] * n_tasks, "payload tasks returned wrong lengths: %r" % (results,))
    del payload, ref, futures
    return {
        "seconds": t1 - t0,
        "send_object_s": t_sent - t0,
        "tasks_s": t1 - t_sent,
        "payload_bytes": size,
        "tasks": n_tasks,
    }


def measure_ppe_payload(pool, size, n_tasks):
    payload = bytes(size)
    gc.collect()
    t0 = time.perf_counter()
    futures = [pool.submit(payload_len, payload) for _ in range(n_tasks)]
    results = [f.result() for f in futures]
    t1 = time.perf_counter()
    _check(results == [size] * n_tasks, "payload tasks returned wrong lengths: %r" % (results,))
    del payload, futures
    return {"seconds": t1 - t0, "payload_bytes": size, "tasks": n_tasks}


def _graph_expected(n):
    return [(i + 1) + ((i + 1) % n + 1) for i in range(n)]


def measure_scaler_graph(client, n):
    """n leaves with a literal argument + n two-input nodes (leaf i and leaf i+1), one client.get
    (after a small warm-up graph, as the latency workload warms up: the processors load the
    node functions once)."""
    client.get({"w": (graph_leaf, 0), "v": (graph_pair, "w", 1)}, "v")
    graph = {("leaf", i): (graph_leaf, i) for i in range(n)}
    graph.update({("pair", i): (graph_pair, ("leaf", i), ("leaf", (i + 1) % n)) for i in range(n)})
    keys = [("pair", i) for i in range(n)]
    t0 = time.perf_counter()
    results = client.get(graph, keys)
    seconds = time.perf_counter() - t0
    _check(results == _graph_expected(n), "graph results are wrong")
    return {"seconds": seconds, "nodes": 2 * n, "nodes_per_s": 2 * n / seconds}


def measure_ppe_graph(pool, n):
    """The same shape on ProcessPoolExecutor, which has no graphs: the driver submits each
    pair once both its leaves are done (results travel through the driver)."""
    t0 = time.perf_counter()
    leaves = [pool.submit(graph_leaf, i) for i in range(n)]
    values = [future.result() for future in leaves]
    pairs = [pool.submit(graph_pair, values[i], values[(i + 1) % n]) for i in range(n)]
    results = [future.result() for future in pairs]
    seconds = time.perf_counter() - t0
    _check(results == _graph_expected(n), "graph results are wrong")
    return {"seconds": seconds, "nodes": 2 * n, "nodes_per_s": 2 * n / seconds}


def run_step(results, workload, engine, label, timeout, fn):
    """Run one measurement under a deadline; record the figures or the error."""
    gc.collect()
    log("%-12s %s ..." % (engine, label))
    t0 = time.perf_counter()
    try:
        with Deadline(timeout, "%s %s" % (engine, label)):
            figures = fn()
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        message = "%s: %s" % (type(exc).__name__, exc)
        results[workload][engine] = {"error": message}
        log("%-12s %s FAILED after %.2f s: %s" % (engine, label, time.perf_counter() - t0, message))
        if not isinstance(exc, WorkloadTimeout):
            traceback.print_exc(file=sys.stderr)
        return False
    results[workload][engine] = figures
    log("%-12s %s done in %.2f s" % (engine, label, time.perf_counter() - t0))
    return True


def mark_skipped(results, engine, reason, workloads):
    for workload in workloads:
        if engine not in results[workload]:
            results[workload][engine] = {"error": "skipped: %s" % reason}


# ---------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------


def _shutdown_pool(pool):
    if sys.version_info >= (3, 9):
        pool.shutdown(wait=True, cancel_futures=True)
    else:
        pool.shutdown(wait=True)


def run_processpool(results, sizes, workers, timeout, mp_context):
    pool_holder = []

    def startup():
        t0 = time.perf_counter()
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp_context)
        pool_holder.append(pool)
        t_constructed = time.perf_counter()
        _check(pool.submit(noop, 1).result() == 1, "first result is wrong")
        t1 = time.perf_counter()
        return {"seconds": t1 - t0, "constructor_s": t_constructed - t0}

    try:
        if not run_step(results, W_STARTUP, PPE, "start-up to first result", timeout, startup):
            mark_skipped(results, PPE, "pool start-up failed", (W_LAT, W_MAP, W_MAP_BATCHED, W_PAYLOAD, W_GRAPH))
            return
        pool = pool_holder[0]

        run_step(
            results, W_LAT, PPE, "latency", timeout,
            lambda: measure_latency(pool.submit, sizes["latency_warmup"], sizes["latency_calls"]),
        )
        run_step(
            results, W_MAP, PPE, "map chunksize=1", timeout,
            lambda: measure_ppe_map(pool, sizes["map_tasks"], 1),
        )
        chunksize = batched_chunksize(sizes["map_tasks"], workers)
        run_step(
            results, W_MAP_BATCHED, PPE, "map chunksize=%d" % chunksize, timeout,
            lambda: measure_ppe_map(pool, sizes["map_tasks"], chunksize),
        )
        run_step(
            results, W_PAYLOAD, PPE, "payload", timeout,
            lambda: measure_ppe_payload(pool, sizes["payload_bytes"], sizes["payload_tasks"]),
        )
        run_step(
            results, W_GRAPH, PPE, "graph (driver-side)", timeout,
            lambda: measure_ppe_graph(pool, sizes["graph_leaves"]),
        )
    finally:
        for pool in pool_holder:
            log("%-12s shutting down pool" % PPE)
            try:
                with Deadline(timeout, "ProcessPoolExecutor.shutdown"):
                    _shutdown_pool(pool)
            except Exception as exc:  # noqa: BLE001
                log("%-12s pool shutdown failed: %s: %s" % (PPE, type(exc).__name__, exc))


def run_scaler(results, sizes, workers, timeout):
    from scaler import Client, SchedulerClusterCombo

    state = {}
    stack = contextlib.ExitStack()

    def startup():
        t0 = time.perf_counter()
        cluster = SchedulerClusterCombo(address=None, n_workers=workers, logging_level="WARNING")
        state["cluster"] = cluster
        t_constructed = time.perf_counter()
        address = cluster.get_address()
        client = stack.enter_context(Client(address=address))
        state["client"] = client
        t_client = time.perf_counter()
        _check(client.submit(noop, 1).result() == 1, "first result is wrong")
        t1 = time.perf_counter()
        return {
            "seconds": t1 - t0,
            "constructor_s": t_constructed - t0,
            "client_connect_s": t_client - t_constructed,
            "first_task_s": t1 - t_client,
            "address": address,
        }

    try:
        if not run_step(results, W_STARTUP, SCALER, "start-up to first result", timeout, startup):
            mark_skipped(results, SCALER, "cluster start-up failed", (W_LAT, W_MAP, W_PAYLOAD, W_GRAPH, W_PROFILED))
            return
        client = state["client"]

        run_step(
            results, W_LAT, SCALER, "latency", timeout,
            lambda: measure_latency(client.submit, sizes["latency_warmup"], sizes["latency_calls"]),
        )
        run_step(
            results, W_MAP, SCALER, "map", timeout,
            lambda: measure_scaler_map(client, sizes["map_tasks"]),
        )
        run_step(
            results, W_PAYLOAD, SCALER, "payload", timeout,
            lambda: measure_scaler_payload(client, sizes["payload_bytes"], sizes["payload_tasks"]),
        )
        run_step(
            results, W_GRAPH, SCALER, "graph", timeout,
            lambda: measure_scaler_graph(client, sizes["graph_leaves"]),
        )
        profiled_client = stack.enter_context(Client(address=state["cluster"].get_address(), profiling=True))
        run_step(
            results, W_PROFILED, SCALER, "map, plain vs profiling=True", timeout * PROFILING_ROUNDS,
            lambda: measure_profiling_overhead(client, profiled_client, sizes["map_tasks"]),
        )
    finally:
        try:
            with Deadline(timeout, "scaler Client close"):
                stack.close()
        except Exception as exc:  # noqa: BLE001
            log("%-12s client close failed: %s: %s" % (SCALER, type(exc).__name__, exc))
        if "cluster" in state:
            log("%-12s shutting down cluster" % SCALER)
            try:
                with Deadline(timeout, "SchedulerClusterCombo.shutdown"):
                    state["cluster"].shutdown()
            except Exception as exc:  # noqa: BLE001
                log(
                    "%-12s cluster shutdown failed (processes may be left running): %s: %s"
                    % (SCALER, type(exc).__name__, exc)
                )


# ---------------------------------------------------------------------------
# Targets and report
# ---------------------------------------------------------------------------


def _get(results, workload, engine, field):
    entry = results.get(workload, {}).get(engine)
    if not entry or "error" in entry:
        return None
    return entry.get(field)


def _verdict(ok):
    return "PASS" if ok else "MISS"


def evaluate_targets(results, sizes, ran):
    """Return {workload: (status, description)}; status in PASS/MISS/n/a."""
    targets = {}
    not_run = "scaler failed" if SCALER in ran else "scaler not run"
    ppe_not_run = "PPE failed" if PPE in ran else "PPE not run"

    desc = "scaler >= PPE map(chunksize=1)"
    s = _get(results, W_MAP, SCALER, "tasks_per_s")
    p = _get(results, W_MAP, PPE, "tasks_per_s")
    if s is None or p is None:
        targets[W_MAP] = ("n/a", "%s (%s)" % (desc, not_run if s is None else ppe_not_run))
    else:
        targets[W_MAP] = (_verdict(s >= p), "%s: %s (%.2fx)" % (desc, _verdict(s >= p), s / p))

    desc = "median < %g ms" % TARGET_LATENCY_MEDIAN_MS
    s = _get(results, W_LAT, SCALER, "median_ms")
    if s is None:
        targets[W_LAT] = ("n/a", "%s (%s)" % (desc, not_run))
    else:
        ok = s < TARGET_LATENCY_MEDIAN_MS
        targets[W_LAT] = (_verdict(ok), "%s: %s" % (desc, _verdict(ok)))

    desc = "< %g s" % TARGET_STARTUP_S
    s = _get(results, W_STARTUP, SCALER, "seconds")
    if s is None:
        targets[W_STARTUP] = ("n/a", "%s (%s)" % (desc, not_run))
    else:
        ok = s < TARGET_STARTUP_S
        targets[W_STARTUP] = (_verdict(ok), "%s: %s" % (desc, _verdict(ok)))

    desc = "%d MB send_object + %d tasks < %g s" % (
        TARGET_PAYLOAD_BYTES // 10 ** 6, TARGET_PAYLOAD_TASKS, TARGET_PAYLOAD_S)
    s = _get(results, W_PAYLOAD, SCALER, "seconds")
    if sizes["payload_bytes"] != TARGET_PAYLOAD_BYTES or sizes["payload_tasks"] != TARGET_PAYLOAD_TASKS:
        targets[W_PAYLOAD] = ("n/a", "%s (not evaluated at this size)" % desc)
    elif s is None:
        targets[W_PAYLOAD] = ("n/a", "%s (%s)" % (desc, not_run))
    else:
        ok = s < TARGET_PAYLOAD_S
        targets[W_PAYLOAD] = (_verdict(ok), "%s: %s" % (desc, _verdict(ok)))

    desc = "scaler >= %s nodes/s" % "{:,.0f}".format(TARGET_GRAPH_NODES_PER_S)
    s = _get(results, W_GRAPH, SCALER, "nodes_per_s")
    if s is None:
        targets[W_GRAPH] = ("n/a", "%s (%s)" % (desc, not_run))
    else:
        ok = s >= TARGET_GRAPH_NODES_PER_S
        targets[W_GRAPH] = (_verdict(ok), "%s: %s (PPE: driver resubmits)" % (desc, _verdict(ok)))

    desc = "profiling costs < %d %% of map" % round(TARGET_PROFILING_OVERHEAD * 100)
    s = _get(results, W_PROFILED, SCALER, "overhead")
    if s is None:
        targets[W_PROFILED] = ("n/a", "%s (%s)" % (desc, not_run))
    else:
        ok = s < TARGET_PROFILING_OVERHEAD
        best_of = _get(results, W_PROFILED, SCALER, "overhead_best_of")
        targets[W_PROFILED] = (_verdict(ok), "%s: %s (%+.1f %%: median of %d paired rounds; best of each: %+.1f %%)" % (
            desc, _verdict(ok), s * 100, PROFILING_ROUNDS, (best_of or 0.0) * 100))
    return targets


def _fmt_cell(results, workload, engine, field, fmt, ran):
    entry = results.get(workload, {}).get(engine)
    if entry is None:
        if engine not in ran:
            return "(not run)"
        return "-"
    if "error" in entry:
        return "TIMEOUT" if "WorkloadTimeout" in entry["error"] else (
            "skipped" if entry["error"].startswith("skipped") else "ERROR")
    return fmt(entry[field])


def _tps(v):
    return "{:,.0f} tasks/s".format(v)


def _nps(v):
    return "{:,.0f} nodes/s".format(v)


def _ms(v):
    return "%.3f ms" % v


def _s(v):
    return "%.3f s" % v


def build_rows(results, sizes, workers, targets, ran):
    n = sizes["map_tasks"]
    chunk = batched_chunksize(n, workers)
    mb = sizes["payload_bytes"] / 10.0 ** 6
    rows = []

    def cell(workload, engine, field, fmt):
        return _fmt_cell(results, workload, engine, field, fmt, ran)

    rows.append((
        "map, %s no-op tasks (PPE chunksize=1)" % "{:,}".format(n),
        cell(W_MAP, SCALER, "tasks_per_s", _tps),
        cell(W_MAP, PPE, "tasks_per_s", _tps),
        targets[W_MAP][1],
    ))
    rows.append((
        "map, %s no-op tasks (PPE chunksize=%d)" % ("{:,}".format(n), chunk),
        "",
        cell(W_MAP_BATCHED, PPE, "tasks_per_s", _tps),
        "context only: multiprocessing.Pool's default chunksize",
    ))
    rows.append((
        "submit().result() latency, median (n=%d)" % sizes["latency_calls"],
        cell(W_LAT, SCALER, "median_ms", _ms),
        cell(W_LAT, PPE, "median_ms", _ms),
        targets[W_LAT][1],
    ))
    rows.append((
        "submit().result() latency, p99 (n=%d)" % sizes["latency_calls"],
        cell(W_LAT, SCALER, "p99_ms", _ms),
        cell(W_LAT, PPE, "p99_ms", _ms),
        "context only (nearest rank)",
    ))
    rows.append((
        "start-up to first result",
        cell(W_STARTUP, SCALER, "seconds", _s),
        cell(W_STARTUP, PPE, "seconds", _s),
        targets[W_STARTUP][1],
    ))
    rows.append((
        "%g MB payload used by %d tasks" % (mb, sizes["payload_tasks"]),
        cell(W_PAYLOAD, SCALER, "seconds", _s),
        cell(W_PAYLOAD, PPE, "seconds", _s),
        targets[W_PAYLOAD][1],
    ))
    rows.append((
        "graph, %s leaves + %s two-input nodes" % ("{:,}".format(sizes["graph_leaves"]),
                                                  "{:,}".format(sizes["graph_leaves"])),
        cell(W_GRAPH, SCALER, "nodes_per_s", _nps),
        cell(W_GRAPH, PPE, "nodes_per_s", _nps),
        targets[W_GRAPH][1],
    ))
    rows.append((
        "map, %s no-op tasks, Client(profiling=True)" % "{:,}".format(n),
        cell(W_PROFILED, SCALER, "tasks_per_s", _tps),
        "",
        targets[W_PROFILED][1],
    ))
    return rows


def format_table(rows):
    header = ("workload", "scaler", "ProcessPoolExecutor", "target/notes")
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for i, row in enumerate([header] + rows):
        # right-align figures, left-align text
        parts = [
            str(row[0]).ljust(widths[0]),
            str(row[1]).rjust(widths[1]),
            str(row[2]).rjust(widths[2]),
            str(row[3]),
        ]
        lines.append("  ".join(parts).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def collect_errors(results):
    errors = []
    for workload, per_engine in results.items():
        for engine, entry in per_engine.items():
            if entry and "error" in entry:
                errors.append((workload, engine, entry["error"]))
    return errors


def environment_info(workers, mp_context, args):
    info = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "workers": workers,
        "processpool_start_method": mp_context.get_start_method(),
        "mode": "quick" if args.quick else "full",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        import cloudpickle

        info["cloudpickle"] = cloudpickle.__version__
    except Exception:  # noqa: BLE001
        info["cloudpickle"] = None
    if not args.only_processpool:
        try:
            import scaler

            info["scaler"] = getattr(scaler, "__version__", None)
        except Exception:  # noqa: BLE001
            info["scaler"] = None
    return info


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark scaler against concurrent.futures.ProcessPoolExecutor "
        "(same workloads, same number of workers).",
    )
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="number of workers for both scaler and ProcessPoolExecutor (default: 2)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a CI smoke run (%d map tasks, %d latency calls, %d MB payload)"
                        % (QUICK_SIZES["map_tasks"], QUICK_SIZES["latency_calls"],
                           QUICK_SIZES["payload_bytes"] // 10 ** 6))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--only-processpool", action="store_true",
                       help="run only the ProcessPoolExecutor half (no scaler import)")
    group.add_argument("--only-scaler", action="store_true",
                       help="run only the scaler half")
    parser.add_argument("--json", metavar="FILE", help="also write all figures to FILE as JSON")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="per-workload deadline; a workload that exceeds it is reported as TIMEOUT "
                        "(default: 60, 0 disables; POSIX only)")
    parser.add_argument("--start-method", choices=multiprocessing.get_all_start_methods(), default=None,
                        help="multiprocessing start method for ProcessPoolExecutor "
                        "(default: the platform default, currently %r)" % multiprocessing.get_start_method())
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    return args


def _ensure_repo_importable():
    """Make ``import scaler`` work from a source checkout, here and in child processes."""
    if _REPO_ROOT not in sys.path:
        sys.path.insert(0, _REPO_ROOT)
    pythonpath = os.environ.get("PYTHONPATH", "")
    if _REPO_ROOT not in pythonpath.split(os.pathsep):
        os.environ["PYTHONPATH"] = _REPO_ROOT + (os.pathsep + pythonpath if pythonpath else "")


def main(argv=None):
    args = parse_args(argv)
    sizes = dict(QUICK_SIZES if args.quick else FULL_SIZES)
    workers = args.workers
    mp_context = multiprocessing.get_context(args.start_method)

    run_ppe = not args.only_scaler
    run_sc = not args.only_processpool

    if run_sc:
        _ensure_repo_importable()
        try:
            import scaler  # noqa: F401
            from scaler import Client, SchedulerClusterCombo  # noqa: F401
        except Exception as exc:  # noqa: BLE001
            log("cannot import scaler (%s: %s); use --only-processpool to run the "
                "ProcessPoolExecutor half alone" % (type(exc).__name__, exc))
            return 2

    results = {w: {} for w in (W_MAP, W_MAP_BATCHED, W_LAT, W_STARTUP, W_PAYLOAD, W_GRAPH, W_PROFILED)}
    env = environment_info(workers, mp_context, args)
    log("workers=%d mode=%s python=%s cpus=%s PPE start method=%s" % (
        workers, env["mode"], env["python"], env["cpu_count"], env["processpool_start_method"]))

    t_total = time.perf_counter()
    # ProcessPoolExecutor first: it is the reference, and its figures survive a
    # scaler failure.
    if run_ppe:
        run_processpool(results, sizes, workers, args.timeout, mp_context)
    if run_sc:
        run_scaler(results, sizes, workers, args.timeout)
    total_s = time.perf_counter() - t_total

    ran = set()
    if run_ppe:
        ran.add(PPE)
    if run_sc:
        ran.add(SCALER)
    targets = evaluate_targets(results, sizes, ran)
    rows = build_rows(results, sizes, workers, targets, ran)

    print("scaler vs concurrent.futures.ProcessPoolExecutor: %d worker%s, %s mode" % (
        workers, "" if workers == 1 else "s", env["mode"]))
    print("python %s (%s), %s, %s CPUs, PPE start method: %s" % (
        env["python"], env["implementation"], env["platform"], env["cpu_count"],
        env["processpool_start_method"]))
    print()
    print(format_table(rows))
    print()
    errors = collect_errors(results)
    real_errors = [e for e in errors if not e[2].startswith("skipped")]
    for workload, engine, message in errors:
        print("%s / %s: %s" % (engine, workload, message))
    if errors:
        print()
    print("total benchmark time: %.1f s" % total_s)

    if args.json:
        document = {
            "environment": env,
            "sizes": sizes,
            "total_seconds": total_s,
            "results": results,
            "targets": {w: {"status": st, "description": d} for w, (st, d) in targets.items()},
        }
        with open(args.json, "w") as fh:
            json.dump(document, fh, indent=2, sort_keys=True)
            fh.write("\n")
        log("figures written to %s" % args.json)

    return 1 if real_errors else 0


if __name__ == "__main__":
    sys.exit(main())
