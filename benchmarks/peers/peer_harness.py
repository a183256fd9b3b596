"""The side of ``bench_peers.py`` that runs inside an engine's process.

Each ``run_<engine>.py`` defines an :class:`Engine` (how that engine starts, submits,
maps, moves a big object, runs a graph, stops) and calls :func:`main`. ``main`` runs the
workloads named in its configuration, in order, and reports each on the original
standard output as one line ``@@BENCH <json>``:

    {"event": "start", "workload": W}            a workload begins (the parent's deadline
                                                 for it starts here)
    {"event": "result", "workload": W, "figures": {...}}
    {"event": "result", "workload": W, "error": "..."}
    {"event": "result", "workload": W, "na": "reason"}
    {"event": "done"}                            every workload reported, engine stopped

File descriptor 1 is pointed at standard error before any engine starts, so whatever an
engine or its worker processes print (some log to ``/dev/stdout``) cannot mix with the
reports. Standard library only: this runs in every peer's virtual environment, on
Python 3.8 and later.
"""

import gc
import json
import math
import os
import statistics
import sys
import threading
import time
import traceback

import peer_tasks as tasks

PAGE = os.sysconf("SC_PAGE_SIZE")

# Workloads, in the order they run. "memory" is last: it leaves many tasks queued.
W_STARTUP = "startup"
W_LATENCY = "latency"
W_MAP = "map"
W_SHORT = "short_tasks"
W_OBJ_IN = "object_in"
W_OBJ_OUT = "result_out"
RESULT_ROUNDS = 3  # result_out: best of this many, after one warm-up round
MAP_ROUNDS = 3  # map, short_tasks: best of up to this many rounds...
MAP_ROUND_BUDGET_S = 10.0  # ...started while the rounds so far took less than this
W_GRAPH = "graph"
W_MEMORY = "memory"
WORKLOADS = (W_STARTUP, W_LATENCY, W_MAP, W_SHORT, W_OBJ_IN, W_OBJ_OUT, W_GRAPH, W_MEMORY)


class NotApplicable(Exception):
    """The workload does not apply to this engine; the message says why."""


class BenchError(Exception):
    pass


def check(condition, message):
    if not condition:
        raise BenchError(message)


def nearest_rank(sorted_values, pct):
    if not sorted_values:
        return float("nan")
    rank = int(math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def graph_expected(n):
    return [(i + 1) + ((i + 1) % n + 1) for i in range(n)]


# ---------------------------------------------------------------------------
# /proc: the process tree and its memory
# ---------------------------------------------------------------------------


def _ppid_table():
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as fh:
                stat = fh.read()
        except OSError:
            continue
        table[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
    return table


def process_tree(root=None):
    """``root`` (default: this process) and all its descendants, parents first."""
    root = os.getpid() if root is None else root
    table = _ppid_table()
    children = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    found = [root]
    for pid in found:
        found.extend(sorted(children.get(pid, ())))
    return found


def process_memory(pid):
    """Proportional set size in bytes (``smaps_rollup``), or the RSS where the kernel has no
    rollup; None if the process is gone."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        with open("/proc/%d/statm" % pid) as fh:
            return int(fh.read().split()[1]) * PAGE
    except OSError:
        return None


def tree_memory(root=None):
    """{pid: bytes} over the whole tree."""
    out = {}
    for pid in process_tree(root):
        value = process_memory(pid)
        if value is not None:
            out[pid] = value
    return out


def comm(pid):
    """The process's name (``ps -o comm``)."""
    try:
        with open("/proc/%d/comm" % pid) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# The engine interface
# ---------------------------------------------------------------------------


class Engine(object):
    """What a runner implements. ``submit`` returns an object with ``result()``."""

    name = "engine"
    map_chunksize = None  # stated in the report; None: the engine does not chunk
    # Where the queue of not-yet-started tasks lives when there is no scheduler process.
    scheduler_note = "no scheduler process: tasks queue in the client process"

    def load(self):
        """Import the engine (untimed in the start-up row: the import row times it)."""

    def start(self, workers):
        raise NotImplementedError

    def submit(self, fn, *args):
        raise NotImplementedError

    def map(self, fn, items):
        return [f.result() for f in [self.submit(fn, x) for x in items]]

    def put_object(self, payload):
        """What tasks receive in place of the payload (a reference, or the bytes)."""
        return payload

    def object_note(self):
        return "bytes passed as the argument of every task"

    def graph(self, n):
        """1 000 leaves + 1 000 two-input nodes; default: the driver resubmits (no graphs)."""
        leaves = [self.submit(tasks.graph_leaf, i) for i in range(n)]
        values = [f.result() for f in leaves]
        pairs = [self.submit(tasks.graph_pair, values[i], values[(i + 1) % n]) for i in range(n)]
        return [f.result() for f in pairs]

    graph_note = "no graphs: the driver submits each pair once its leaves are done"

    def submit_queued(self, fn, items):
        return [self.submit(fn, x) for x in items]

    def scheduler_pids(self):
        """{pid: role} of the processes that hold the scheduler's state; {} if none."""
        return {}

    def cancel(self, futures):
        """Drop the queued tasks of the memory workload before the shutdown, where that is
        cheap (a local operation); the default leaves them to the shutdown."""

    def shutdown(self):
        pass


# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------


def w_startup(engine, cfg):
    engine.load()  # its import is the "import time" row, measured in fresh interpreters
    t0 = time.perf_counter()
    engine.start(cfg["workers"])
    t1 = time.perf_counter()
    check(engine.submit(tasks.noop, 1).result() == 1, "first result is wrong")
    t2 = time.perf_counter()
    return {"seconds": t2 - t0, "constructor_s": t1 - t0, "first_task_s": t2 - t1}


def w_latency(engine, cfg):
    sizes = cfg["sizes"]
    for i in range(sizes["latency_warmup"]):
        check(engine.submit(tasks.noop, i).result() == i, "warm-up returned a wrong result")
    samples = []
    perf = time.perf_counter
    for i in range(sizes["latency_calls"]):
        t0 = perf()
        result = engine.submit(tasks.noop, i).result()
        samples.append(perf() - t0)
        check(result == i, "latency call returned a wrong result")
    ms = sorted(s * 1000.0 for s in samples)
    return {"median_ms": statistics.median(ms), "p99_ms": nearest_rank(ms, 99),
            "mean_ms": statistics.mean(ms), "min_ms": ms[0], "max_ms": ms[-1],
            "calls": len(ms), "warmup_calls": sizes["latency_warmup"]}


def _chunk_note(engine, n, workers):
    chunk = engine.map_chunksize(n, workers) if callable(engine.map_chunksize) else engine.map_chunksize
    return chunk


def _rounds(run):
    """``run()`` (which returns its seconds) up to ``MAP_ROUNDS`` times, while the rounds so
    far took under ``MAP_ROUND_BUDGET_S``: the fastest round and every round's seconds. A
    single 1 s measurement on a shared 2-core machine moves by 20-30 %; an engine that takes
    minutes per round runs once."""
    times = []
    while len(times) < MAP_ROUNDS and sum(times) < MAP_ROUND_BUDGET_S:
        times.append(run())
    return min(times), times


def w_map(engine, cfg):
    n = cfg["sizes"]["map_tasks"]
    engine.map(tasks.noop, range(min(n, 100)))  # every worker has loaded the function

    def one():
        t0 = time.perf_counter()
        results = engine.map(tasks.noop, range(n))
        seconds = time.perf_counter() - t0
        check(list(results) == list(range(n)), "map returned wrong results")
        return seconds
    seconds, rounds = _rounds(one)
    return {"tasks_per_s": n / seconds, "seconds": seconds, "tasks": n, "rounds_s": rounds,
            "chunksize": _chunk_note(engine, n, cfg["workers"])}


def w_short(engine, cfg):
    sizes = cfg["sizes"]
    n, each = sizes["short_tasks"], sizes["short_task_s"]

    def one():
        t0 = time.perf_counter()
        results = engine.map(tasks.busy, [each] * n)
        seconds = time.perf_counter() - t0
        check(list(results) == [each] * n, "busy tasks returned wrong results")
        return seconds
    seconds, rounds = _rounds(one)
    ideal = n * each / cfg["workers"]
    return {"efficiency": ideal / seconds, "seconds": seconds, "ideal_s": ideal, "tasks": n, "rounds_s": rounds,
            "task_s": each, "chunksize": _chunk_note(engine, n, cfg["workers"])}


def w_object_in(engine, cfg):
    sizes = cfg["sizes"]
    size, n = sizes["payload_bytes"], sizes["payload_tasks"]
    payload = b"x" * size
    gc.collect()
    t0 = time.perf_counter()
    handle = engine.put_object(payload)
    t_put = time.perf_counter()
    results = [f.result() for f in [engine.submit(tasks.payload_len, handle) for _ in range(n)]]
    t1 = time.perf_counter()
    check(results == [size] * n, "payload tasks returned wrong lengths: %r" % (results,))
    del payload, handle
    return {"seconds": t1 - t0, "put_s": t_put - t0, "tasks_s": t1 - t_put, "payload_bytes": size,
            "tasks": n, "how": engine.object_note()}


def w_result_out(engine, cfg):
    """A big result back to the caller: the whole path once to warm it (the first big result
    of a fresh process pays first-touch page faults on every side, for every engine), then
    the best of ``RESULT_ROUNDS`` of the build alone and of the build plus the transfer."""
    size = cfg["sizes"]["result_bytes"]
    check(engine.submit(tasks.build_only, size).result() == size, "build_only returned a wrong length")
    result = engine.submit(tasks.build_result, size).result()
    check(len(result) == size, "the result has a wrong length")
    del result
    builds, totals = [], []
    for _ in range(RESULT_ROUNDS):
        gc.collect()
        t0 = time.perf_counter()
        check(engine.submit(tasks.build_only, size).result() == size, "build_only returned a wrong length")
        builds.append(time.perf_counter() - t0)
        gc.collect()
        t0 = time.perf_counter()
        result = engine.submit(tasks.build_result, size).result()
        totals.append(time.perf_counter() - t0)
        check(len(result) == size, "the result has a wrong length")
        del result
    build_s, total_s = min(builds), min(totals)
    return {"seconds": total_s, "build_s": build_s, "beyond_build_s": total_s - build_s, "result_bytes": size,
            "rounds": RESULT_ROUNDS, "builds_s": builds, "totals_s": totals}


def w_graph(engine, cfg):
    n = cfg["sizes"]["graph_leaves"]
    t0 = time.perf_counter()
    results = engine.graph(n)
    seconds = time.perf_counter() - t0
    check(list(results) == graph_expected(n), "graph results are wrong")
    return {"seconds": seconds, "nodes": 2 * n, "nodes_per_s": 2 * n / seconds, "how": engine.graph_note}


def _settle(limit_s=30.0, interval_s=0.5, tolerance=0.005):
    """Read the tree's memory until two readings agree within ``tolerance`` (the engine has
    absorbed the submissions), at most ``limit_s``."""
    t0 = time.perf_counter()
    last = tree_memory()
    while True:
        time.sleep(interval_s)
        now = tree_memory()
        a, b = sum(last.values()), sum(now.values())
        if abs(b - a) <= tolerance * max(a, 1) or time.perf_counter() - t0 > limit_s:
            return now, time.perf_counter() - t0
        last = now


def w_memory(engine, cfg):
    """Occupy every worker with a task that waits on a file, then submit N no-op tasks that
    cannot start; the whole tree's PSS grows by what N queued tasks cost."""
    workers, n = cfg["workers"], cfg["sizes"]["queued_tasks"]
    scratch = cfg["scratch"]
    release = os.path.join(scratch, "release")
    started = os.path.join(scratch, "started")
    os.makedirs(started)
    blockers = []
    try:
        for k in range(workers):  # one at a time, so each lands on an idle worker
            blockers.append(engine.submit(tasks.block_until, release, started))
            deadline = time.time() + 30
            while len(os.listdir(started)) < k + 1:
                check(time.time() < deadline, "only %d of %d workers could be occupied" % (
                    len(os.listdir(started)), workers))
                time.sleep(0.01)
        gc.collect()
        time.sleep(0.5)
        before = tree_memory()
        t0 = time.perf_counter()
        queued = engine.submit_queued(tasks.noop, range(n))
        submit_s = time.perf_counter() - t0
        after, settle_s = _settle()
        scheduler = engine.scheduler_pids()
        figures = {
            "tasks": n,
            "bytes_per_task": (sum(after.values()) - sum(before.values())) / float(n),
            "submit_s": submit_s,
            "settle_s": settle_s,
            "processes": [{"pid": pid, "role": scheduler.get(pid) or ("client" if pid == os.getpid() else "other"),
                           "before": before.get(pid), "after": after.get(pid)} for pid in sorted(after)],
            "measure": "PSS" if os.path.exists("/proc/self/smaps_rollup") else "RSS",
        }
        sched = [pid for pid, role in scheduler.items() if role == "scheduler"]
        if sched:
            figures["scheduler_bytes_per_task"] = sum(
                (after.get(p) or 0) - (before.get(p) or 0) for p in sched) / float(n)
        else:
            figures["scheduler_na"] = engine.scheduler_note
        engine.cancel(queued)
        return figures
    finally:
        with open(release, "w"):
            pass


RUNNERS = {W_STARTUP: w_startup, W_LATENCY: w_latency, W_MAP: w_map, W_SHORT: w_short,
           W_OBJ_IN: w_object_in, W_OBJ_OUT: w_result_out, W_GRAPH: w_graph, W_MEMORY: w_memory}


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


class Reporter(object):
    def __init__(self):
        sys.stdout.flush()
        self._out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)  # engines and their workers print to stderr from now on
        self._lock = threading.Lock()

    def emit(self, **fields):
        line = "@@BENCH " + json.dumps(fields, sort_keys=True, default=str) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()


def _shutdown_within(engine, seconds):
    done = threading.Event()

    def run():
        try:
            engine.shutdown()
        except Exception:  # noqa: BLE001 - the parent kills what is left
            traceback.print_exc()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def main(engine, argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cfg = json.loads(argv[0])
    reporter = Reporter()
    workloads = [w for w in WORKLOADS if w in cfg["workloads"]]
    skip_rest = None
    for workload in workloads:
        if skip_rest is not None:
            reporter.emit(event="result", workload=workload, error="skipped: %s" % skip_rest)
            continue
        reporter.emit(event="start", workload=workload)
        gc.collect()
        t0 = time.perf_counter()
        try:
            figures = RUNNERS[workload](engine, cfg)
        except NotApplicable as exc:
            reporter.emit(event="result", workload=workload, na=str(exc))
        except Exception as exc:  # noqa: BLE001 - reported, and the next workload runs
            traceback.print_exc()
            reporter.emit(event="result", workload=workload, error="%s: %s" % (type(exc).__name__, exc))
            if workload == W_STARTUP:
                skip_rest = "the engine did not start"
        else:
            figures["wall_s"] = time.perf_counter() - t0
            reporter.emit(event="result", workload=workload, figures=figures)
    if not _shutdown_within(engine, cfg.get("shutdown_timeout", 30.0)):
        sys.stderr.write("[%s] shutdown did not finish; the parent kills the process group\n" % engine.name)
    reporter.emit(event="done")
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown: leftover threads and children are the parent's to kill
