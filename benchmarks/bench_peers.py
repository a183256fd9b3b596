#!/usr/bin/env python3
"""Benchmark scaler against its peers, in one run, on one machine, with the same workers.

Engines (columns)
  scaler    this checkout's scaler (``SchedulerClusterCombo`` + ``Client``)
  upstream  OpenGRIS Scaler, PyPI ``opengris-scaler`` (same ``scaler`` package name, hence
            its own virtual environment and process)
  dask      Dask distributed: ``LocalCluster(n_workers=N, threads_per_worker=1,
            processes=True)`` + ``Client``
  loky      ``loky.get_reusable_executor(max_workers=N)``
  ppe       ``concurrent.futures.ProcessPoolExecutor(max_workers=N)``
  pool      ``multiprocessing.Pool(N)``, ``map`` with its default chunksize
  pool1     the same with ``chunksize=1`` (start-up, map and 1 ms workloads only): per-task dispatch, as the
            issue's table measured the Pool (its 25-41k tasks/s and 79 % come only from
            chunksize 1), and what the 1 ms target is judged against

Each third-party peer is installed on first use into its own virtual environment
(``~/.cache/scaler-bench/venvs/<peer>-<python X.Y>``, or ``--venv-dir``); peers are never
dependencies of scaler. Every engine runs in a subprocess of its own (a runner under
``benchmarks/peers/``, executed by that environment's Python, in its own process group)
that runs the workloads and reports JSON lines; this parent, standard library only,
collects them, prints one table with the machine floor beside it and writes JSON with
``--json``. A peer that cannot be installed or started is reported as such in the table.

Workloads (rows): import time, start -> first result, submit().result() latency (median,
p99), no-op map, 2 000 x 1 ms busy tasks (efficiency), 200 MB object in (+10 tasks),
200 MB result out (total and beyond the build), memory per in-flight task (100 000
queued), a 1 000 + 1 000 node graph. See benchmarks/README.rst.

Usage
  python3 benchmarks/bench_peers.py                       # full run, all six engines
  python3 benchmarks/bench_peers.py --quick               # small sizes; scaler, ppe, pool
  python3 benchmarks/bench_peers.py --peers scaler,dask --json out.json
  python3 benchmarks/bench_peers.py --cpu-profile         # + per-process CPU of scaler's map
  python3 benchmarks/bench_peers.py --pairs 5             # 5 rounds of the paired pass (default 3)

The ratio targets (to PPE) are judged on a paired pass after the main one: scaler and PPE
back to back, the order alternating, the median of the rounds' ratios (``--pairs``). The
machine's speed (a pure-Python loop) is printed before each engine.

Exit status: 0 if every workload that ran finished, 1 if one crashed or timed out, 2 on a
usage error. A MISS against a target, a peer that cannot be installed and a workload
that does not apply ("n/a") do not change it.
"""

import argparse
import json
import os
import pickle
import platform
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
RUNNER_DIR = os.path.join(HERE, "peers")
CPU_BREAKDOWN = os.path.join(HERE, "cpu_breakdown.py")

ENGINES = ("scaler", "upstream", "dask", "loky", "ppe", "pool", "pool1")
LABELS = {"scaler": "scaler", "upstream": "upstream", "dask": "Dask", "loky": "loky", "ppe": "PPE",
          "pool": "mp.Pool", "pool1": "mp.Pool c=1"}
QUICK_DEFAULT = ("scaler", "ppe", "pool", "pool1")  # no download

# How each engine is obtained. "venv": installed into its own environment on first use;
# "local": the parent's interpreter (scaler from this checkout, the standard library).
PEERS = {
    "scaler": {"kind": "local", "runner": "run_scaler.py", "flavour": "scaler",
               "import": "from scaler import Client, SchedulerClusterCombo",
               "repo_on_path": True},
    "upstream": {"kind": "venv", "runner": "run_scaler.py", "flavour": "upstream",
                 "import": "from scaler import Client, SchedulerClusterCombo",
                 "requirements": ["opengris-scaler"], "distributions": ["opengris-scaler"]},
    "dask": {"kind": "venv", "runner": "run_dask.py", "import": "from distributed import Client, LocalCluster",
             "requirements": ["distributed"], "distributions": ["dask", "distributed"]},
    "loky": {"kind": "venv", "runner": "run_loky.py", "import": "from loky import get_reusable_executor",
             "requirements": ["loky"], "distributions": ["loky"]},
    "ppe": {"kind": "local", "runner": "run_ppe.py", "import": "from concurrent.futures import ProcessPoolExecutor"},
    "pool": {"kind": "local", "runner": "run_pool.py", "import": "import multiprocessing.pool"},
    # The same Pool, chunksize=1: only the workloads where the chunk matters (start-up starts it).
    "pool1": {"kind": "local", "runner": "run_pool.py", "flavour": "chunksize1", "import": None,
              "workloads": ("startup", "map", "short_tasks")},
}
# Internal hook (the tests use it): {"peer": ["requirement", ...]} replaces a peer's
# requirements, e.g. to make an installation fail.
REQUIREMENTS_HOOK = "SCALER_BENCH_PEER_REQUIREMENTS"

WORKLOADS = ("startup", "latency", "map", "short_tasks", "object_in", "result_out", "graph", "memory")

FULL_SIZES = {"latency_warmup": 20, "latency_calls": 300, "map_tasks": 20000, "short_tasks": 2000,
              "short_task_s": 0.001, "payload_bytes": 200 * 10 ** 6, "payload_tasks": 10,
              "result_bytes": 200 * 10 ** 6, "queued_tasks": 100000, "graph_leaves": 1000}
QUICK_SIZES = {"latency_warmup": 10, "latency_calls": 50, "map_tasks": 2000, "short_tasks": 200,
               "short_task_s": 0.001, "payload_bytes": 20 * 10 ** 6, "payload_tasks": 10,
               "result_bytes": 20 * 10 ** 6, "queued_tasks": 10000, "graph_leaves": 200}

# Targets of issue 12, judged on scaler's column.
T_LAT_MEDIAN_MS, T_LAT_VS_PPE, T_P99_MS = 0.4, 1.5, 1.0
T_OBJ_IN_S, T_RESULT_BEYOND_S = 1.0, 0.2
T_SHORT_EFFICIENCY = 0.85
T_MAP_TPS, T_MAP_VS_PPE = 30000.0, 4.0
T_BYTES_PER_TASK = 1024.0
T_IMPORT_MS, T_STARTUP_S = 40.0, 0.25

MARKER = "bench-peers.json"

# The paired pass: scaler and PPE back to back, alternating which goes first (ABBA), for
# the ratio targets. The main pass runs the engines minutes apart, and this machine's speed
# drifts by 20-30 % within minutes (see ``machine_speed``): a ratio of two figures taken
# minutes apart measures the drift as much as the engines.
PAIRED_ENGINES = ("scaler", "ppe")
PAIRED_WORKLOADS = ("startup", "latency", "map")
FULL_PAIRS, QUICK_PAIRS = 3, 1
SPEED_LOOP = 2000000  # additions of the pure-Python calibration loop


def log(message):
    sys.stderr.write("[bench_peers] %s\n" % message)
    sys.stderr.flush()


class _SameImport(Exception):
    """An engine whose import is another column's (pool1): not measured twice."""


def pool_chunksize(n_items, n_workers):
    """multiprocessing.Pool.map's default chunksize."""
    chunksize, extra = divmod(n_items, n_workers * 4)
    return max(1, chunksize + (1 if extra else 0))


def nearest_rank(sorted_values, pct):
    if not sorted_values:
        return float("nan")
    rank = -(-pct * len(sorted_values) // 100)  # ceil without floats for integer pct
    return sorted_values[min(max(int(rank), 1), len(sorted_values)) - 1]


# ---------------------------------------------------------------------------
# Virtual environments
# ---------------------------------------------------------------------------


def python_version(python):
    out = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True,
                         timeout=60)
    return out.stdout.strip() if out.returncode == 0 else None


def candidate_pythons():
    """This interpreter first, then pyenv's other CPythons 3.8+, newest first."""
    found = [sys.executable]
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    versions_dir = os.path.join(root, "versions")
    mine = "%d.%d" % sys.version_info[:2]
    others = []
    if os.path.isdir(versions_dir):
        for name in os.listdir(versions_dir):
            parts = name.split(".")
            if len(parts) == 3 and all(p.isdigit() for p in parts) and parts[0] == "3" and int(parts[1]) >= 8:
                python = os.path.join(versions_dir, name, "bin", "python3")
                if os.path.exists(python) and "%s.%s" % tuple(parts[:2]) != mine:
                    others.append((tuple(int(p) for p in parts), python))
    return found + [python for _, python in sorted(others, reverse=True)]


def peer_requirements(peer):
    override = os.environ.get(REQUIREMENTS_HOOK)
    if override:
        table = json.loads(override)
        if peer in table:
            return list(table[peer])
    return list(PEERS[peer]["requirements"])


def _tail(text, lines=3, width=300):
    text = " / ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())
    return text[-width:]


def ensure_venv(peer, venv_dir, pythons=None, max_attempts=3, pip_timeout=900, venv_options=()):
    """The peer's environment, created and installed on first use. Returns a dict with
    ``status`` "ok" (``python``, ``python_version``, ``versions``, ``venv``) or
    "not installable" (``reason``, ``attempts``). ``venv_options`` are extra
    ``python -m venv`` options (the tests use ``--without-pip --system-site-packages``
    to skip ensurepip)."""
    requirements = peer_requirements(peer)
    spec = PEERS[peer]
    attempts = []
    for base in (pythons if pythons is not None else candidate_pythons())[:max_attempts]:
        version = python_version(base) if os.path.exists(base) else None
        if version is None:
            attempts.append({"python": base, "error": "no such interpreter"})
            continue
        venv = os.path.join(venv_dir, "%s-%s" % (peer, ".".join(version.split(".")[:2])))
        python = os.path.join(venv, "bin", "python")
        marker = os.path.join(venv, MARKER)
        try:
            with open(marker) as fh:
                info = json.load(fh)
            if info.get("requirements") == requirements and os.path.exists(python):
                info["cached"] = True
                return info
        except (OSError, ValueError):
            pass
        log("%s: creating %s (Python %s) and installing %s" % (peer, venv, version, " ".join(requirements)))
        shutil.rmtree(venv, ignore_errors=True)
        steps = [
            ("python -m venv", [base, "-m", "venv"] + list(venv_options) + [venv], 300),
            ("pip install", [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
             + requirements, pip_timeout),
            (spec["import"], [python, "-c", spec["import"]], 120),
        ]
        error = None
        for what, command, timeout in steps:
            try:
                done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      universal_newlines=True, timeout=timeout, env=_clean_env())
            except subprocess.TimeoutExpired:
                error = "%s timed out after %d s" % (what, timeout)
                break
            except OSError as exc:
                error = "%s: %s" % (what, exc)
                break
            if done.returncode != 0:
                error = "%s failed (exit %d): %s" % (what, done.returncode, _tail(done.stdout))
                break
        if error is not None:
            attempts.append({"python": base, "python_version": version, "error": error})
            log("%s: not installable with Python %s: %s" % (peer, version, error))
            shutil.rmtree(venv, ignore_errors=True)
            continue
        info = {"status": "ok", "requirements": requirements, "python": python, "python_version": version,
                "venv": venv, "versions": installed_versions(python, spec.get("distributions", ())),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "attempts": attempts}
        with open(marker, "w") as fh:
            json.dump(info, fh, indent=2, sort_keys=True)
        info["cached"] = False
        return info
    reason = "; ".join("Python %s: %s" % (a.get("python_version") or a["python"], a["error"]) for a in attempts)
    return {"status": "not installable", "reason": reason or "no Python interpreter to try",
            "requirements": requirements, "attempts": attempts}


def installed_versions(python, distributions):
    code = ("import json, sys\n"
            "from importlib import metadata\n"
            "out = {}\n"
            "for d in sys.argv[1:]:\n"
            "    try: out[d] = metadata.version(d)\n"
            "    except Exception: out[d] = None\n"
            "print(json.dumps(out))\n")
    done = subprocess.run([python, "-c", code] + list(distributions), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, universal_newlines=True, timeout=60, env=_clean_env())
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {}


def _clean_env():
    """The environment for a peer's interpreter: no PYTHONPATH/PYTHONHOME of ours (this
    checkout's ``scaler`` must not shadow upstream's), and bytecode caches written and used
    as after any ``pip install`` (with PYTHONDONTWRITEBYTECODE set, every import and every
    process start would compile its sources each time and measure that instead)."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    return env


def engine_env(peer):
    env = _clean_env()
    path = [RUNNER_DIR]
    if PEERS[peer].get("repo_on_path"):
        path.insert(0, REPO_ROOT)
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def local_info(peer):
    info = {"status": "ok", "python": sys.executable, "python_version": platform.python_version(),
            "venv": None, "versions": {}}
    if peer == "scaler":
        info["versions"] = {"scaler": scaler_version(), "checkout": REPO_ROOT}
    else:
        info["versions"] = {"python": platform.python_version()}
    return info


def scaler_version():
    done = subprocess.run([sys.executable, "-c", "import scaler; print(getattr(scaler, '__version__', '?'))"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True,
                          env=engine_env("scaler"), timeout=60)
    return done.stdout.strip() or None


# ---------------------------------------------------------------------------
# Import time, in a fresh interpreter
# ---------------------------------------------------------------------------


def _best_run(command, env, repeats):
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=120)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError("%s failed: %s" % (" ".join(command), _tail(done.stderr)))
        best = elapsed if best is None else min(best, elapsed)
    return best


def measure_import(python, statement, env, repeats=7):
    """Best of ``repeats`` ``python -c STATEMENT`` (the import users write, e.g. ``from scaler
    import Client, SchedulerClusterCombo``) minus best of ``python -c pass``."""
    _best_run([python, "-c", statement], env, 1)  # bytecode cache written
    base = _best_run([python, "-c", "pass"], env, repeats)
    full = _best_run([python, "-c", statement], env, repeats)
    return {"ms": max(0.0, full - base) * 1000.0, "statement": statement, "interpreter_ms": base * 1000.0,
            "repeats": repeats}


# ---------------------------------------------------------------------------
# Running one engine: its own process group, a deadline per workload
# ---------------------------------------------------------------------------


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _become_subreaper():
    """Orphans of the engines (a process that left the group) become our children, so
    :func:`reap_orphans` can end them. Linux only; best effort."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except Exception:  # noqa: BLE001
        return False


def reap_orphans():
    """Kill and reap every child of ours (orphans of the engines, adopted as subreaper);
    returns the pids that were still alive."""
    me = os.getpid()
    ended = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == me:
            pid = int(entry)
            try:
                if fields[0] != "Z":  # alive: it escaped the engine's process group
                    os.kill(pid, signal.SIGKILL)
                    ended.append(pid)
                os.waitpid(pid, 0)
            except OSError:
                pass
    return ended


def run_engine(peer, python, config, timeout, log_path):
    """Run one engine's runner; returns {workload: entry} where entry is the figures dict,
    {"error": ...} or {"na": ...}."""
    results = {}
    command = [python, os.path.join(RUNNER_DIR, PEERS[peer]["runner"]), json.dumps(config)]
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL,
                                env=engine_env(peer) if PEERS[peer]["kind"] == "local" else _venv_env(peer),
                                start_new_session=True, cwd=config["scratch"])
    lines = queue.Queue()

    def reader():
        for raw in iter(proc.stdout.readline, b""):
            lines.put(raw)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    current = None
    deadline = time.time() + timeout if timeout else None
    finished = False
    try:
        while True:
            try:
                raw = lines.get(timeout=None if deadline is None else max(0.0, deadline - time.time()))
            except queue.Empty:
                what = current or "start-up"
                log("%-8s %s: TIMEOUT after %g s; killing the engine's process group" % (peer, what, timeout))
                results[current or "startup"] = {"error": "TIMEOUT after %g s" % timeout}
                break
            if raw is None:
                break
            text = raw.decode(errors="replace").strip()
            if not text.startswith("@@BENCH "):
                continue
            event = json.loads(text[len("@@BENCH "):])
            if event["event"] == "start":
                current = event["workload"]
                deadline = time.time() + timeout if timeout else None
                log("%-8s %s ..." % (peer, current))
            elif event["event"] == "result":
                entry = event.get("figures") or {k: event[k] for k in ("error", "na") if k in event}
                results[event["workload"]] = entry
                status = "done" if "figures" in event else ("n/a" if "na" in event else "FAILED: " + event["error"])
                log("%-8s %s %s" % (peer, event["workload"], status))
                current = None
            elif event["event"] == "done":
                finished = True
                break
        if finished:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    finally:
        _kill_group(proc)
        proc.stdout.close()
    if not finished and current is not None and current not in results:
        results[current] = {"error": "the engine process died (exit %s); see %s" % (proc.returncode, log_path)}
    for workload in config["workloads"]:
        if workload not in results:
            results[workload] = {"error": "skipped: the engine process was ended before it"}
    return results


def _venv_env(peer):
    env = _clean_env()
    env["PYTHONPATH"] = RUNNER_DIR
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------------------
# The machine floor
# ---------------------------------------------------------------------------


def _best(fn, repeats=3):
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t0
        best = elapsed if best is None else min(best, elapsed)
    return best


def _floor_child(port, size, pings):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray(size)
    view = memoryview(buffer)
    while True:
        got = 0
        command = sock.recv(1)
        if command != b"T":
            break
        while got < size:
            n = sock.recv_into(view[got:])
            if not n:
                return
            got += n
        sock.sendall(b"k")
    for _ in range(pings):
        sock.sendall(sock.recv(1))


def measure_floor(size, pings=2000):
    """What the machine allows for ``size`` bytes: a copy, pickle both ways, one loopback
    TCP transfer to another process, and a TCP ping-pong round trip."""
    payload = b"x" * size
    out = {"bytes": size}
    out["copy_s"] = _best(lambda: bytearray(payload))
    pickled = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    out["pickle_dumps_s"] = _best(lambda: pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    out["pickle_loads_s"] = _best(lambda: pickle.loads(pickled))
    del pickled
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            server.close()
            _floor_child(port, size, pings)
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    try:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        view = memoryview(payload)

        def transfer():
            conn.sendall(b"T")
            conn.sendall(view)
            conn.recv(1)

        out["tcp_transfer_s"] = _best(transfer)
        conn.sendall(b"P")
        samples = []
        for _ in range(pings):
            t0 = time.perf_counter()
            conn.sendall(b"p")
            conn.recv(1)
            samples.append(time.perf_counter() - t0)
        samples.sort()
        out["tcp_ping_pong_median_us"] = statistics.median(samples) * 1e6
        out["tcp_ping_pong_p99_us"] = nearest_rank(samples, 99) * 1e6
        conn.close()
    finally:
        server.close()
        os.waitpid(pid, 0)
    return out


def format_floor(floor):
    mb = floor["bytes"] / 1e6
    return "\n".join([
        "machine floor (%g MB):" % mb,
        "  copy (bytearray(payload))       %8.3f s" % floor["copy_s"],
        "  pickle.dumps                    %8.3f s" % floor["pickle_dumps_s"],
        "  pickle.loads                    %8.3f s" % floor["pickle_loads_s"],
        "  loopback TCP, one transfer      %8.3f s" % floor["tcp_transfer_s"],
        "  TCP ping-pong round trip        %8.1f us median, %.1f us p99" % (
            floor["tcp_ping_pong_median_us"], floor["tcp_ping_pong_p99_us"]),
    ])


def machine_speed(n=SPEED_LOOP, repeats=3):
    """Milliseconds for ``n`` additions in a pure-Python loop, best of ``repeats``: how fast
    this machine runs Python code right now. A shared virtual machine's speed drifts (other
    tenants' load on caches and memory, not always visible as steal); the figure beside each
    engine says in what phase it was measured."""
    def loop():
        total = 0
        for i in range(n):
            total += i
        return total
    return _best(loop, repeats) * 1000.0


def format_speed(speed):
    shown = ["%s %.0f" % (engine, ms) for engine, ms in speed.items() if ms is not None]
    if not shown:
        return ""
    return ("machine speed before each engine ran (ms for %s additions in a Python loop; lower is faster): "
            % _n(SPEED_LOOP) + ", ".join(shown))


def run_pairs(rounds, peers, workers, sizes, timeout, scratch):
    """``rounds`` back-to-back runs of scaler and PPE (``PAIRED_WORKLOADS`` only), the order
    alternating (ABBA): [{engine: {workload: entry}}, ...]. Every run is a fresh runner
    process, as in the main pass."""
    pairs = []
    for index in range(rounds):
        order = PAIRED_ENGINES if index % 2 == 0 else tuple(reversed(PAIRED_ENGINES))
        pair = {}
        for engine in order:
            directory = os.path.join(scratch, "paired-%d-%s" % (index, engine))
            os.makedirs(directory)
            config = {"workers": workers, "sizes": sizes, "workloads": list(PAIRED_WORKLOADS),
                      "scratch": directory, "flavour": PEERS[engine].get("flavour", engine),
                      "shutdown_timeout": 30.0}
            log("paired round %d/%d: %s" % (index + 1, rounds, engine))
            pair[engine] = run_engine(engine, peers[engine]["python"], config, timeout,
                                      os.path.join(scratch, "paired-%d-%s.log" % (index, engine)))
            reap_orphans()
        pairs.append(pair)
    return pairs


def _pair_fig(pair, engine, workload, field):
    entry = (pair.get(engine) or {}).get(workload)
    if not entry or "error" in entry or "na" in entry:
        return None
    return entry.get(field)


def paired_figures(pairs):
    """From the paired pass: scaler/PPE ratios of the latency median and of the map rate,
    one per round where both engines have the figure, and scaler's start-up samples."""
    out = {"latency_ratio": [], "map_ratio": [], "scaler_startup_s": [], "rounds": []}
    for pair in pairs or ():
        latency = [_pair_fig(pair, e, "latency", "median_ms") for e in PAIRED_ENGINES]
        rate = [_pair_fig(pair, e, "map", "tasks_per_s") for e in PAIRED_ENGINES]
        startup = _pair_fig(pair, "scaler", "startup", "seconds")
        row = {"scaler_latency_ms": latency[0], "ppe_latency_ms": latency[1], "scaler_map_tps": rate[0],
               "ppe_map_tps": rate[1], "scaler_startup_s": startup}
        if latency[0] is not None and latency[1]:
            out["latency_ratio"].append(latency[0] / latency[1])
        if rate[0] is not None and rate[1]:
            out["map_ratio"].append(rate[0] / rate[1])
        if startup is not None:
            out["scaler_startup_s"].append(startup)
        out["rounds"].append(row)
    return out


def format_pairs(paired):
    if not paired or not paired["rounds"]:
        return ""

    def f(value, fmt):
        return "-" if value is None else fmt % value
    lines = ["paired pass: scaler and PPE back to back, the order alternating, %d round(s) "
             "(the ratio targets are judged on the median ratio)" % len(paired["rounds"]),
             "  round   scaler start   scaler latency   PPE latency   ratio   scaler map/s   PPE map/s   ratio"]
    for index, row in enumerate(paired["rounds"], 1):
        lat = (row["scaler_latency_ms"] / row["ppe_latency_ms"]
               if row["scaler_latency_ms"] is not None and row["ppe_latency_ms"] else None)
        rate = (row["scaler_map_tps"] / row["ppe_map_tps"]
                if row["scaler_map_tps"] is not None and row["ppe_map_tps"] else None)
        lines.append("  %5d   %12s   %14s   %11s   %5s   %12s   %9s   %5s" % (
            index, f(row["scaler_startup_s"], "%.3f s"), f(row["scaler_latency_ms"], "%.3f ms"),
            f(row["ppe_latency_ms"], "%.3f ms"), f(lat, "%.2fx"),
            f(row["scaler_map_tps"], "%.0f"), f(row["ppe_map_tps"], "%.0f"), f(rate, "%.2fx")))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Per-process CPU of scaler's map (benchmarks/cpu_breakdown.py)
# ---------------------------------------------------------------------------


def cpu_profile(tasks, workers, timeout):
    command = [sys.executable, CPU_BREAKDOWN, "--tasks", str(tasks), "--workers", str(workers), "--json"]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env=engine_env("scaler"), timeout=timeout or None, start_new_session=True)
    if done.returncode != 0:
        return {"error": "cpu_breakdown.py failed (exit %d): %s" % (done.returncode, _tail(done.stderr))}
    return json.loads(done.stdout)


def _profile_rows(figures, unit):
    lines = ["  %-16s %8s %14s %14s" % ("process", "CPU s", "CPU us/" + unit, "wake-ups/" + unit)]
    for row in figures["processes"] + [figures["all"]]:
        wakeups = row.get("wakeups_per_task")
        lines.append("  %-16s %8.2f %14.1f %14s" % (row["role"], row["cpu_s"], row["cpu_us_per_task"],
                                                   "-" if wakeups is None else "%.2f" % wakeups))
    return lines


def format_cpu_profile(profile):
    if "error" in profile:
        return "per-process CPU of scaler's map: ERROR: %s" % profile["error"]
    lines = ["per-process CPU of scaler's no-op map (benchmarks/cpu_breakdown.py): %d tasks, %d workers, "
             "%.2f s, %s tasks/s" % (profile["tasks"], profile["workers"], profile["seconds"],
                                     "{:,.0f}".format(profile["tasks_per_s"]))]
    lines += _profile_rows(profile, "task")
    trips = profile.get("round_trips")
    if trips:
        lines.append("and of %d submit(noop).result() round trips, one at a time (median %.0f us):"
                     % (trips["count"], trips["median_us"]))
        lines += _profile_rows(trips, "trip")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Targets, table, JSON
# ---------------------------------------------------------------------------


def _fig(results, workload, engine, field):
    entry = results.get(workload, {}).get(engine)
    if not entry or "error" in entry or "na" in entry:
        return None
    return entry.get(field)


def _verdict(ok):
    return "PASS" if ok else "MISS"


def evaluate_targets(results, imports, sizes, paired=None):
    """{row key: (status, text)} for scaler's column; status PASS, MISS or n/a. With the
    paired pass (``paired_figures``), the ratios to PPE are the median of its rounds' ratios
    and the start-up is the median of scaler's starts in both passes; the text says so."""
    full = sizes == FULL_SIZES
    paired = paired or {}
    targets = {}

    def judge(key, value, ok, text):
        if value is None:
            targets[key] = ("n/a", text + ": n/a (scaler has no figure)")
        else:
            targets[key] = (_verdict(ok), "%s: %s" % (text, _verdict(ok)))

    def ratio(main_value, main_ppe, paired_ratios, fmt):
        """(the ratio judged, its description)."""
        main = main_value / main_ppe if main_value is not None and main_ppe else None
        if paired_ratios:
            judged = statistics.median(paired_ratios)
            text = " (paired %s, median of %d" % (fmt % judged, len(paired_ratios))
            return judged, text + ("; main pass %s)" % (fmt % main) if main is not None else ")")
        return main, (" (%s)" % (fmt % main) if main is not None else "")

    median = _fig(results, "latency", "scaler", "median_ms")
    ppe = _fig(results, "latency", "ppe", "median_ms")
    lat_ratio, note = ratio(median, ppe, paired.get("latency_ratio"), "%.2fx")
    text = "<= %g ms, <= %gx PPE" % (T_LAT_MEDIAN_MS, T_LAT_VS_PPE) + note
    judge("latency_median", median,
          median is not None and median <= T_LAT_MEDIAN_MS and (lat_ratio is None or lat_ratio <= T_LAT_VS_PPE),
          text + ("" if lat_ratio is not None else " [PPE not run]"))
    p99 = _fig(results, "latency", "scaler", "p99_ms")
    judge("latency_p99", p99, p99 is not None and p99 <= T_P99_MS, "<= %g ms" % T_P99_MS)

    tps = _fig(results, "map", "scaler", "tasks_per_s")
    ppe = _fig(results, "map", "ppe", "tasks_per_s")
    map_ratio, note = ratio(tps, ppe, paired.get("map_ratio"), "%.2fx")
    text = ">= %s/s, >= %gx PPE" % ("{:,.0f}".format(T_MAP_TPS), T_MAP_VS_PPE) + note
    judge("map", tps, tps is not None and tps >= T_MAP_TPS and (map_ratio is None or map_ratio >= T_MAP_VS_PPE),
          text + ("" if map_ratio is not None else " [PPE not run]"))

    # "ahead of multiprocessing.Pool": the Pool of the table, per-task dispatch
    # (chunksize=1); the default chunk of 250 sends 8 messages for 2 000 tasks.
    eff = _fig(results, "short_tasks", "scaler", "efficiency")
    pool = _fig(results, "short_tasks", "pool1", "efficiency")
    judge("short_tasks", eff, eff is not None and eff >= T_SHORT_EFFICIENCY and (pool is None or eff > pool),
          ">= %d %%, ahead of mp.Pool c=1" % round(T_SHORT_EFFICIENCY * 100) + ("" if pool is not None
                                                                                 else " [Pool c=1 not run]"))

    def sized(key, value, ok, text):
        if not full:
            targets[key] = ("n/a", text + ": judged at full size")
        else:
            judge(key, value, ok, text)

    s = _fig(results, "object_in", "scaler", "seconds")
    sized("object_in", s, s is not None and s <= T_OBJ_IN_S, "<= %g s" % T_OBJ_IN_S)
    s = _fig(results, "result_out", "scaler", "beyond_build_s")
    sized("result_beyond", s, s is not None and s <= T_RESULT_BEYOND_S, "<= %g s beyond the build" % T_RESULT_BEYOND_S)
    s = _fig(results, "memory", "scaler", "bytes_per_task")
    sized("memory", s, s is not None and s <= T_BYTES_PER_TASK, "<= 1 KB (%d B)" % T_BYTES_PER_TASK)
    ms = (imports.get("scaler") or {}).get("ms")
    judge("import", ms, ms is not None and ms <= T_IMPORT_MS, "<= %g ms" % T_IMPORT_MS)
    s = _fig(results, "startup", "scaler", "seconds")
    text = "<= %g s" % T_STARTUP_S
    starts = ([s] if s is not None else []) + list(paired.get("scaler_startup_s") or ())
    if s is not None and len(starts) > 1:
        s = statistics.median(starts)
        text += " (median of %d starts, %.3f s)" % (len(starts), s)
    judge("startup", s, s is not None and s <= T_STARTUP_S, text)
    return targets


def _n(v):
    return "{:,.0f}".format(v)


ROWS = (
    # key, workload, field, formatter
    ("import", None, "ms", lambda v: "%.0f ms" % v),
    ("startup", "startup", "seconds", lambda v: "%.3f s" % v),
    ("latency_median", "latency", "median_ms", lambda v: "%.3f ms" % v),
    ("latency_p99", "latency", "p99_ms", lambda v: "%.3f ms" % v),
    ("map", "map", "tasks_per_s", lambda v: "%s/s" % _n(v)),
    ("short_tasks", "short_tasks", "efficiency", lambda v: "%.0f %%" % (v * 100)),
    ("object_in", "object_in", "seconds", lambda v: "%.3f s" % v),
    ("result_out", "result_out", "seconds", lambda v: "%.3f s" % v),
    ("result_beyond", "result_out", "beyond_build_s", lambda v: "%.3f s" % v),
    ("memory", "memory", "bytes_per_task", lambda v: "%s B" % _n(v)),
    ("memory_scheduler", "memory", "scheduler_bytes_per_task", lambda v: "%s B" % _n(v)),
    ("graph", "graph", "nodes_per_s", lambda v: "%s/s" % _n(v)),
)


def row_labels(sizes, workers):
    mb_in = sizes["payload_bytes"] / 1e6
    mb_out = sizes["result_bytes"] / 1e6
    return {
        "import": "import time (fresh interpreter)",
        "startup": "start -> first result",
        "latency_median": "submit().result() median (n=%d)" % sizes["latency_calls"],
        "latency_p99": "submit().result() p99 (nearest rank)",
        "map": "no-op map, %s tasks (PPE, loky, Pool c=1 chunksize=1; Pool chunksize=%s)" % (
            _n(sizes["map_tasks"]), _n(pool_chunksize(sizes["map_tasks"], workers))),
        "short_tasks": "%s x %g ms busy tasks, efficiency (Pool c=1 chunksize=1; Pool chunksize=%s)" % (
            _n(sizes["short_tasks"]), sizes["short_task_s"] * 1000, _n(pool_chunksize(sizes["short_tasks"], workers))),
        "object_in": "%g MB object in + %d tasks using it" % (mb_in, sizes["payload_tasks"]),
        "result_out": "%g MB result out, total" % mb_out,
        "result_beyond": "%g MB result out, beyond the build" % mb_out,
        "memory": "memory per in-flight task (%s queued), whole tree" % _n(sizes["queued_tasks"]),
        "memory_scheduler": "  of which the scheduler process",
        "graph": "graph, %s leaves + %s pairs" % (_n(sizes["graph_leaves"]), _n(sizes["graph_leaves"])),
    }


def _cell(entry, field, fmt, notes, engine, key):
    if entry is None:
        return "-"
    if "error" in entry:
        error = entry["error"]
        notes.append("%s / %s: %s" % (LABELS[engine], key, error))
        if error.startswith("TIMEOUT"):
            return "TIMEOUT"
        return "skipped" if error.startswith("skipped") else "ERROR"
    if "na" in entry:
        notes.append("%s / %s: n/a: %s" % (LABELS[engine], key, entry["na"]))
        return "n/a"
    value = entry.get(field)
    if value is None:
        if field == "scheduler_bytes_per_task" and entry.get("scheduler_na"):
            notes.append("%s / %s: n/a: %s" % (LABELS[engine], key, entry["scheduler_na"]))
        return "n/a"
    return fmt(value)


def build_table(engines, peers, results, imports, targets, sizes, workers):
    """(header, rows, notes): rows of strings, one column per engine, then the target."""
    notes = []
    header = ["workload"] + [LABELS[e] for e in engines] + ["scaler target (issue 12)"]
    version_row = ["engine version (Python)"]
    for engine in engines:
        info = peers[engine]
        if info["status"] != "ok":
            version_row.append("not installable")
            notes.append("%s: not installable: %s" % (LABELS[engine], info["reason"]))
            continue
        versions = info.get("versions") or {}
        if engine == "scaler":
            version = versions.get("scaler") or "?"
        elif engine in ("ppe", "pool", "pool1"):
            version = "stdlib"
        else:
            dist = PEERS[engine]["distributions"][-1]
            version = versions.get(dist) or "?"
        version_row.append("%s (%s)" % (version, ".".join(info["python_version"].split(".")[:2])))
    version_row.append("")
    rows = [version_row]
    labels = row_labels(sizes, workers)
    for key, workload, field, fmt in ROWS:
        row = [labels[key]]
        for engine in engines:
            if peers[engine]["status"] != "ok":
                row.append("not installable")
            elif workload is None:
                entry = imports.get(engine)
                row.append(_cell(entry, field, fmt, notes, engine, key))
            else:
                row.append(_cell(results.get(workload, {}).get(engine), field, fmt, notes, engine, key))
        row.append(targets[key][1] if key in targets else "")
        rows.append(row)
    measured = ["%s: %s" % (LABELS[e], PEERS[e]["import"]) for e in engines if PEERS[e]["import"] is not None]
    if measured:
        notes.append("import time: " + ", ".join(measured))
    seen, unique = set(), []
    for note in notes:
        if note not in seen:
            seen.add(note)
            unique.append(note)
    return header, rows, unique


def format_table(header, rows):
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate([header] + rows):
        parts = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, len(row) - 1)] + [row[-1]]
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def crashed(results):
    """(workload, engine, error) of every workload that crashed or timed out (not n/a,
    not skipped after an earlier failure, not a peer that could not be installed)."""
    out = []
    for workload, per_engine in results.items():
        for engine, entry in per_engine.items():
            if entry and "error" in entry and not entry["error"].startswith("skipped"):
                out.append((workload, engine, entry["error"]))
    return out


def cpu_ticks(path="/proc/stat"):
    """(stolen, total) CPU ticks of the whole machine so far, from the ``cpu`` line of
    /proc/stat; None where there is no such file. Steal is the time the hypervisor ran
    something else while this virtual machine had work: a run with much of it measured a
    slower machine than the next one will."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("cpu "):
                    ticks = [int(x) for x in line.split()[1:]]
                    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8])
    except (OSError, ValueError):
        pass
    return None


def steal_percent(before, after):
    """The share of CPU time stolen between two ``cpu_ticks`` readings, in %; None if unknown."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


def format_steal(steal):
    shown = ["%s %.1f %%" % (engine, pct) for engine, pct in steal.items() if pct is not None]
    if not shown:
        return ""
    return "CPU time stolen by the hypervisor while each engine ran (/proc/stat): " + ", ".join(shown)


def build_document(env, sizes, peers, results, imports, floor, targets, profile, total_s, steal=None,
                   speed=None, paired=None):
    return {
        "environment": env,
        "sizes": sizes,
        "peers": peers,
        "imports": imports,
        "results": results,
        "floor": floor,
        "targets": {k: {"status": st, "description": d} for k, (st, d) in targets.items()},
        "cpu_profile": profile,
        "total_seconds": total_s,
        "steal_percent": steal or {},
        "machine_speed_ms": speed or {},
        "paired": paired,
    }


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="scaler against upstream Scaler, Dask, loky, ProcessPoolExecutor and multiprocessing.Pool, "
                    "in one run (each peer from its own virtual environment, each engine in its own process).")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="workers for every engine (default 2)")
    parser.add_argument("--peers", metavar="LIST",
                        help="comma-separated engines among %s (default: all; with --quick: %s)"
                             % (",".join(ENGINES), ",".join(QUICK_DEFAULT)))
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="deadline of each workload; past it the engine's processes are killed, the "
                             "workload shows TIMEOUT and the next engine runs (default 300, quick 60; 0: none)")
    parser.add_argument("--venv-dir", metavar="DIR", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "scaler-bench", "venvs"),
        help="where the peers' virtual environments live (default %(default)s)")
    parser.add_argument("--cpu-profile", action="store_true",
                        help="also run benchmarks/cpu_breakdown.py: CPU per task of each scaler process "
                             "during the map workload")
    parser.add_argument("--no-floor", action="store_true", help="skip the machine-floor measurements")
    parser.add_argument("--pairs", type=int, default=None, metavar="N",
                        help="rounds of the paired pass: scaler and PPE back to back (start-up, latency, map), "
                             "on which the ratio targets are judged (default %d, quick %d; 0: none)"
                             % (FULL_PAIRS, QUICK_PAIRS))
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.peers is None:
        args.engines = list(QUICK_DEFAULT if args.quick else ENGINES)
    else:
        names = [p.strip() for p in args.peers.split(",") if p.strip()]
        unknown = [p for p in names if p not in ENGINES]
        if unknown or not names:
            parser.error("--peers: unknown engine(s) %s; choose among %s" % (",".join(unknown) or "(none)",
                                                                            ",".join(ENGINES)))
        args.engines = [e for e in ENGINES if e in names]
    if args.timeout is None:
        args.timeout = 60.0 if args.quick else 300.0
    if args.timeout < 0:
        parser.error("--timeout must be >= 0")
    if args.pairs is None:
        args.pairs = QUICK_PAIRS if args.quick else FULL_PAIRS
    if args.pairs < 0:
        parser.error("--pairs must be >= 0")
    return args


def environment_info(args, workers):
    import multiprocessing

    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "workers": workers,
        "start_method": multiprocessing.get_start_method(),
        "mode": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "venv_dir": args.venv_dir,
    }


def main(argv=None):
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return exc.code
    sizes = dict(QUICK_SIZES if args.quick else FULL_SIZES)
    workers = args.workers
    env = environment_info(args, workers)
    _become_subreaper()
    t_total = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="bench-peers-")
    peers, results, imports = {}, {w: {} for w in WORKLOADS}, {}
    steal, speed = {}, {}
    floor = profile = paired = None
    pair_failures = []
    interrupted = False
    try:
        # Installations first, so pip competes with no measurement.
        for engine in args.engines:
            if PEERS[engine]["kind"] == "venv":
                os.makedirs(args.venv_dir, exist_ok=True)
                peers[engine] = ensure_venv(engine, args.venv_dir)
            else:
                peers[engine] = local_info(engine)
        if not args.no_floor:
            log("machine floor ...")
            floor = measure_floor(sizes["payload_bytes"])
        for engine in args.engines:
            info = peers[engine]
            if info["status"] != "ok":
                continue
            try:
                if PEERS[engine]["import"] is None:  # the same import as another column's
                    raise _SameImport()
                imports[engine] = measure_import(info["python"], PEERS[engine]["import"],
                                                 engine_env(engine) if PEERS[engine]["kind"] == "local"
                                                 else _venv_env(engine))
            except _SameImport:
                pass
            except Exception as exc:  # noqa: BLE001
                imports[engine] = {"error": "%s: %s" % (type(exc).__name__, exc)}
            directory = os.path.join(scratch, engine)
            os.makedirs(directory)
            config = {"workers": workers, "sizes": sizes, "workloads": list(PEERS[engine].get("workloads", WORKLOADS)),
                      "scratch": directory, "flavour": PEERS[engine].get("flavour", engine),
                      "shutdown_timeout": 30.0}
            log_path = os.path.join(scratch, "%s.log" % engine)
            speed[engine] = machine_speed()
            ticks = cpu_ticks()
            for workload, entry in run_engine(engine, info["python"], config, args.timeout, log_path).items():
                results[workload][engine] = entry
            steal[engine] = steal_percent(ticks, cpu_ticks())
            reaped = reap_orphans()
            if reaped:
                log("%s: ended %d leftover process(es)" % (engine, len(reaped)))
            if any("error" in e and not e["error"].startswith("skipped") for e in
                   (results[w].get(engine) or {} for w in WORKLOADS)):
                with open(log_path, errors="replace") as fh:
                    tail = fh.read()[-3000:]
                if tail.strip():
                    log("%s: the end of its log:\n%s" % (engine, tail))
        if args.pairs and all(peers.get(e, {}).get("status") == "ok" for e in PAIRED_ENGINES):
            pairs = run_pairs(args.pairs, peers, workers, sizes, args.timeout, scratch)
            paired = paired_figures(pairs)
            for index, pair in enumerate(pairs, 1):
                for engine, per_workload in pair.items():
                    pair_failures += [(w, "%s (paired round %d)" % (engine, index), e)
                                      for w, _, e in crashed({w: {engine: entry} for w, entry in per_workload.items()})]
        if args.cpu_profile and "scaler" in args.engines:
            log("per-process CPU of scaler's map (cpu_breakdown.py) ...")
            try:
                profile = cpu_profile(sizes["map_tasks"], workers, args.timeout)
            except subprocess.TimeoutExpired:
                profile = {"error": "TIMEOUT after %g s" % args.timeout}
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: every engine process has been killed")
    finally:
        reap_orphans()
        shutil.rmtree(scratch, ignore_errors=True)
    total_s = time.perf_counter() - t_total
    if interrupted:
        return 130

    targets = evaluate_targets(results, imports, sizes, paired) if "scaler" in args.engines else {}
    header, rows, notes = build_table(args.engines, peers, results, imports, targets, sizes, workers)
    print("scaler against its peers: %d worker%s each, %s sizes, %s, Python %s, %s CPUs, %s" % (
        workers, "" if workers == 1 else "s", env["mode"], env["platform"], env["python"], env["cpu_count"],
        env["date"]))
    print()
    print(format_table(header, rows))
    print()
    for note in notes:
        print(note)
    if notes:
        print()
    for text in (format_steal(steal), format_speed(speed), format_pairs(paired)):
        if text:
            print(text)
            print()
    for workload, who, error in pair_failures:
        print("%s / %s: %s" % (who, workload, error))
    if floor is not None:
        print(format_floor(floor))
        print()
    if profile is not None:
        print(format_cpu_profile(profile))
        print()
    print("total benchmark time: %.1f s" % total_s)
    if args.json:
        document = build_document(env, sizes, peers, results, imports, floor, targets, profile, total_s, steal,
                                  speed, paired)
        with open(args.json, "w") as fh:
            json.dump(document, fh, indent=2, sort_keys=True)
            fh.write("\n")
        log("figures written to %s" % args.json)
    failures = crashed(results) + pair_failures
    if profile is not None and "error" in profile:
        failures.append(("cpu_profile", "scaler", profile["error"]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
