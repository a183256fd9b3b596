"""End to end: worker managers and adapters, as real processes on 127.0.0.1.

- fixed mode (``baremetal_native --mode fixed``): exactly N workers, capacity 0, never
  scaled; dead workers are not restarted unless ``--restart-workers``;
- dynamic mode: starts with no worker, grows under ``scaling=vanilla`` up to its limit and
  shrinks back to zero when idle; under ``scaling=no`` the scheduler says why nothing runs;
- the webhook HTTP API of the adapters: every route, every error status;
- the scheduler driving an adapter over HTTP (``--adapter-webhook-urls``);
- ``--preload`` with arguments, and what a failing preload does;
- every command line and TOML example of the worker manager / adapter user pages (seeds
  000-003), run as written with free ports;
- the manager written without scaler in docs/worker_managers.rst, run from the page.

Commands are started as ``python -m ...`` (``COMMANDS`` maps the console script names of
the docs to modules), each in its own process group. Every process seen under a started
command is recorded by pid and start time; a test checks that none of them is left after a
graceful stop, and clean-up SIGKILLs whatever is left, whatever happened.
"""

import concurrent.futures
import http.client
import json
import os
import re
import shlex
import signal
import sys
import textwrap
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Sequence, Set

import pytest

from e2e_support import (DEFAULT_PYTHONPATH, Proc, ProcessRegistry, Spawned, all_stats, children, cmdline,
                         describe, descendants, exit_code_within, free_port_pair, group_members, has_exited,
                         is_present, proc_of, read_stat, role, subprocess_env, wait_until)
from scaler import Client

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="e2e tests need Linux")

TIMEOUT = 60  # seconds, for any single wait on processes starting or tasks finishing
STOP_TIMEOUT = 30  # seconds a command may take to exit after SIGTERM
VANILLA = "allocate=even_load; scaling=vanilla"

# The console scripts of the docs, as modules of this checkout (the scripts may not be
# installed, or may belong to another installed copy).
COMMANDS = {
    "scaler_scheduler": ["-m", "scaler.scheduler"],
    "scaler_worker_manager": ["-m", "scaler.worker_manager"],
    "scaler_worker_adapter_native": ["-m", "scaler.entry_points.worker_adapter_native"],
    "scaler_worker_adapter_fixed_native": ["-m", "scaler.entry_points.worker_adapter_fixed_native"],
    "scaler": ["-m", "scaler"],
}


# --- task functions (workers import this module by name) -------------------------------------

def add(a, b):
    return a + b


def square(x):
    return x * x


def worker_pid_after(seconds):
    """Sleep, then return the pid of the worker (agent) that ran this: the processor's parent."""
    time.sleep(seconds)
    return os.getppid()


def preload_effect():
    """What the preload hook left in this processor: its module global and environment variable."""
    import scaler_preload_probe
    return scaler_preload_probe.SEEN, os.environ.get("SCALER_PRELOAD_PROBE")


# --- processes --------------------------------------------------------------------------------

class Family:
    """Starts commands and remembers every process seen below them (pid + start time).

    ``record()`` snapshots the trees (called by every wait below); ``leftovers()`` lists the
    recorded processes that still exist; ``cleanup()`` kills everything, recorded or in a
    started process group.
    """

    def __init__(self) -> None:
        self.registry = ProcessRegistry()
        self.seen: Set[Proc] = set()
        self.names: Dict[Proc, str] = {}  # what each was when first seen (a zombie has no command line)

    def _saw(self, proc: Proc) -> None:
        if proc not in self.seen:
            self.seen.add(proc)
            self.names[proc] = " ".join(cmdline(proc.pid))[:200]

    def command(self, argv: Sequence[str], name: str, env: Optional[Dict[str, str]] = None,
                cwd: Optional[str] = None) -> Spawned:
        child = self.registry.python(list(argv), name, env=env if env is not None else subprocess_env(), cwd=cwd)
        stat = read_stat(child.pid)
        if stat is not None:
            self._saw(proc_of(stat))
        return child

    def record(self) -> Dict[int, object]:
        stats = all_stats()
        for child in self.registry.spawned:
            for stat in descendants(child.pid, stats):
                self._saw(proc_of(stat))
        return stats

    def leftovers(self, exclude: Sequence[Proc] = ()) -> List[Proc]:
        return sorted(p for p in self.seen if p not in exclude and is_present(p))

    def describe(self, procs: Sequence[Proc]) -> str:
        """``describe`` with what each process was when first seen, and its parent now."""
        lines = []
        for proc in procs:
            stat = read_stat(proc.pid)
            parent = getattr(stat, "ppid", "?") if stat is not None else "?"
            lines.append("%s (parent now %s; was: %s)" % (describe([proc]), parent, self.names.get(proc, "?")))
        return "\n".join(lines)

    def cleanup(self) -> None:
        self.record()
        # Commands still running (a test failed half-way) get a short graceful stop first, so
        # that each parent reaps its own children instead of leaving orphans behind.
        running = [c for c in self.registry.spawned if c.popen.poll() is None]
        for command in running:
            command.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for command in running:
            try:
                command.popen.wait(max(0.1, deadline - time.monotonic()))
            except Exception:
                pass
        self.registry.cleanup()  # SIGKILL each started process group
        for proc in self.seen:  # and whatever left its group (the launcher's children have their own)
            if is_present(proc) and not has_exited(proc):
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(has_exited(p) for p in self.seen):
            time.sleep(0.05)


@pytest.fixture
def family():
    fam = Family()
    try:
        yield fam
    finally:
        fam.cleanup()


def address_of(port: int) -> str:
    return "tcp://127.0.0.1:%d" % port


def start_scheduler(family: Family, port: int, *extra: str, name: str = "scheduler") -> Spawned:
    scheduler = family.command(["-m", "scaler.scheduler", address_of(port), *extra], name)
    scheduler.output.wait_for(r"listening on", TIMEOUT)
    return scheduler


def live_workers(manager_pid: int, stats=None) -> List:
    """The manager's worker processes (spawned as scaler.worker, or forked), zombies excluded."""
    stats = all_stats() if stats is None else stats
    return [s for s in children(manager_pid, stats) if s.state not in ("Z", "X") and role(s.pid) == "worker"]


def ready_workers(manager_pid: int, stats) -> List:
    """Workers that have a live processor (a worker starts its processor once it runs)."""
    return [w for w in live_workers(manager_pid, stats) if any(p.state not in ("Z", "X")
                                                                  for p in children(w.pid, stats))]


def wait_workers(family: Family, manager_pid: int, count: int, timeout: float = TIMEOUT,
                 with_processors: bool = True) -> List:
    found: List[List] = []

    def check() -> bool:
        stats = family.record()
        workers = ready_workers(manager_pid, stats) if with_processors else live_workers(manager_pid, stats)
        if len(workers) == count and len(live_workers(manager_pid, stats)) == count:
            found.append(workers)
            return True
        return False

    wait_until(check, timeout, "exactly %d worker(s) under pid %d" % (count, manager_pid), interval=0.05)
    return found[0]


def mapped(client: Client, fn, *iterables) -> list:
    """``client.map`` with a timeout on each result (``map`` itself blocks without one)."""
    return [f.result(timeout=TIMEOUT) for f in [client.submit(fn, *args) for args in zip(*iterables)]]


def sample_until_done(futures: Sequence[concurrent.futures.Future], sample, timeout: float = TIMEOUT) -> None:
    """Call ``sample()`` every 50 ms until every future is done; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not all(f.done() for f in futures):
        if time.monotonic() > deadline:
            raise AssertionError("%d of %d tasks not done after %.0fs"
                                 % (sum(not f.done() for f in futures), len(futures), timeout))
        sample()
        time.sleep(0.05)


def stop_and_check(family: Family, *commands: Spawned, expect_code: int = 0,
                   exclude: Sequence[Proc] = ()) -> None:
    """SIGTERM the commands (in the given order), check their exit codes, then that nothing is left."""
    family.record()
    for command in commands:
        command.popen.send_signal(signal.SIGTERM)
        code = exit_code_within(command, STOP_TIMEOUT)
        assert code == expect_code, "%s exited with %d after SIGTERM; output:\n%s" % (
            command.name, code, command.output.text())
    leftovers = family.leftovers(exclude)
    assert not leftovers, "still present after every command exited:\n" + family.describe(leftovers)


def manager_line(name: str) -> str:
    return r"worker manager \S+ connected \(%s" % name


# --- webhook calls ----------------------------------------------------------------------------

def http_call(port: int, method: str, path: str = "/", body: Optional[bytes] = None,
              headers: Optional[Dict[str, str]] = None, timeout: float = 10.0):
    """One HTTP request with http.client: (status, decoded JSON reply)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None and "Content-Length" not in (headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        reply = conn.getresponse()
        raw = reply.read()
        assert reply.getheader("Content-Type") == "application/json", reply.getheaders()
        return reply.status, json.loads(raw.decode())
    finally:
        conn.close()


def post(port: int, body, path: str = "/"):
    """POST a JSON action with urllib, as the scheduler does: (status, decoded JSON reply)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode())


def wait_webhook(port: int, timeout: float = TIMEOUT, process: Optional[Spawned] = None) -> dict:
    """Poll GET /status until the webhook answers; return the status. With ``process`` (the
    adapter serving it), fail at once if it exits first, and show its output either way."""
    result: List[dict] = []

    def check() -> bool:
        if process is not None and process.popen.poll() is not None:
            raise AssertionError("the adapter exited (%s) before its webhook on port %d answered; output:\n%s"
                                 % (process.popen.returncode, port, process.output.text()))
        try:
            status, body = http_call(port, "GET", "/status", timeout=2)
        except OSError:
            return False
        result.append(body)
        return status == 200

    try:
        wait_until(check, timeout, "the webhook on port %d to answer" % port, interval=0.05)
    except AssertionError as exc:
        if process is None or "exited" in str(exc):
            raise
        raise AssertionError("%s; the adapter's output:\n%s" % (exc, process.output.text())) from None
    return result[-1]


# === fixed mode =================================================================================

@pytest.mark.parametrize("count_flag, policy", [("-mtc", None), ("-n", VANILLA)],
                         ids=["mtc-scaling-no", "n-alias-scaling-vanilla"])
def test_fixed_mode_runs_exactly_n_workers_and_is_never_scaled(family, count_flag, policy):
    port = free_port_pair()
    scheduler = start_scheduler(family, port, *(["-pc", policy] if policy else []))
    manager = family.command(["-m", "scaler.worker_manager", "baremetal_native", address_of(port),
                              "--mode", "fixed", count_flag, "2"], "manager")
    workers = wait_workers(family, manager.pid, 2)
    # It registers with capacity 0: the scheduler never asks it for workers.
    scheduler.output.wait_for(manager_line(r"fixed, capacity 0, via native\)"), TIMEOUT)

    with Client(address_of(port)) as client:
        assert mapped(client, add, range(10), range(10)) == [2 * i for i in range(10)]
        # A burst: 60 queued tasks on 2 workers would make vanilla ask for 6 workers.
        futures = [client.submit(worker_pid_after, 0.05) for _ in range(60)]
        counts = [0]
        sample_until_done(futures, lambda: counts.append(len(live_workers(manager.pid, family.record()))))
        ran_on = {f.result(timeout=TIMEOUT) for f in futures}
    most = max(counts)
    assert most == 2, "the fixed pool grew to %d workers" % most
    assert ran_on <= {w.pid for w in workers}, "tasks ran on %s, the pool is %s" % (ran_on, workers)
    assert {w.pid for w in live_workers(manager.pid)} == {w.pid for w in workers}
    assert not any("started worker group" in line for line in scheduler.output.lines), scheduler.output.text()
    stop_and_check(family, manager, scheduler)


@pytest.mark.parametrize("restart", [True, False], ids=["default-restarts", "restart-workers-false"])
def test_fixed_mode_killed_worker(family, restart):
    from scaler.worker_manager.native import RESTART_BACKOFF_SECONDS

    port = free_port_pair()
    scheduler = start_scheduler(family, port)
    manager = family.command(["-m", "scaler.worker_manager", "baremetal_native", address_of(port), "--mode", "fixed",
                              "-mtc", "2"] + ([] if restart else ["--restart-workers", "false"]), "manager")
    workers = wait_workers(family, manager.pid, 2)
    with Client(address_of(port)) as client:
        assert client.submit(add, 1, 2).result(timeout=TIMEOUT) == 3

        victim, survivor = workers
        # Its processor is orphaned by the kill and exits through its lifeline; nobody reaps
        # an orphan here (PID 1 does not), so it may stay a zombie: not a leak of ours.
        orphans = [proc_of(s) for s in descendants(victim.pid)]
        os.kill(victim.pid, signal.SIGKILL)
        manager.output.wait_for(r"worker \S+ exited with code -9", TIMEOUT)
        if restart:
            manager.output.wait_for(r"restarting worker \S+ in 1s", 5)
            now = wait_workers(family, manager.pid, 2)
            assert victim.pid not in {w.pid for w in now} and survivor.pid in {w.pid for w in now}
        else:
            # A restart would come after RESTART_BACKOFF_SECONDS[0]: wait past it, and see none.
            deadline = time.monotonic() + RESTART_BACKOFF_SECONDS[0] + 1.5
            while time.monotonic() < deadline:
                assert [w.pid for w in live_workers(manager.pid, family.record())] == [survivor.pid]
                time.sleep(0.1)
            assert not any("restarting" in line for line in manager.output.lines), manager.output.text()
            assert manager.popen.poll() is None, "the manager stopped with a worker left"
        assert mapped(client, add, range(20), range(20)) == [2 * i for i in range(20)]
    wait_until(lambda: all(has_exited(p) for p in orphans), 10, "the killed worker's processor to exit")
    stop_and_check(family, manager, scheduler, exclude=orphans)


# === dynamic mode ================================================================================

def test_dynamic_mode_scales_up_to_its_limit_and_back_to_zero(family):
    port = free_port_pair()
    scheduler = start_scheduler(family, port, "-pc", VANILLA)
    manager = family.command(["-m", "scaler.worker_manager", "baremetal_native", address_of(port), "-mtc", "3"],
                             "manager")
    scheduler.output.wait_for(manager_line(r"dynamic, capacity 3, via native\)"), TIMEOUT)
    # No task, no worker: a second of scaling decisions starts nothing.
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        assert live_workers(manager.pid) == [], "a dynamic manager started workers with no task queued"
        time.sleep(0.1)

    with Client(address_of(port)) as client:
        futures = [client.submit(worker_pid_after, 0.1) for _ in range(60)]
        seen: List[List] = []
        sample_until_done(futures, lambda: seen.append(live_workers(manager.pid, family.record())))
        ran_on = [f.result(timeout=TIMEOUT) for f in futures]
        most = max(len(workers) for workers in seen)
        pids = {w.pid for workers in seen for w in workers}
        assert mapped(client, square, range(10)) == [x * x for x in range(10)]
    assert most == 3, "expected the pool to grow to its limit of 3 workers, saw at most %d" % most
    assert set(ran_on) <= pids, "tasks ran on %s, not on the manager's workers %s" % (set(ran_on), pids)
    assert len(set(ran_on)) >= 2, "balancing should have spread the burst over the new workers: %s" % ran_on
    scheduler.output.wait_for(r"started worker group", 1)

    # Idle: every worker is drained and stopped (idle grace 2 s, then one tick).
    wait_until(lambda: not live_workers(manager.pid, family.record()), 30, "the pool to shrink to zero workers")
    scheduler.output.wait_for(r"shut down worker group", 5)
    assert manager.popen.poll() is None
    stop_and_check(family, manager, scheduler)


def test_dynamic_mode_under_scaling_no_warns_and_runs_nothing(family):
    port = free_port_pair()
    scheduler = start_scheduler(family, port, "-pc", "allocate=even_load; scaling=no")
    manager = family.command(["-m", "scaler.worker_manager", "baremetal_native", address_of(port), "-mtc", "2"],
                             "manager")
    scheduler.output.wait_for(manager_line(r"dynamic, capacity 2, via native\)"), TIMEOUT)
    warning = scheduler.output.wait_for(r"WARNING.*scaling policy is 'no'", 5)
    assert "--policy-content" in warning, warning
    manager.output.wait_for(r"WARNING.*scaling policy is 'no'", 5)
    with Client(address_of(port)) as client:
        future = client.submit(add, 1, 2)
        with pytest.raises(concurrent.futures.TimeoutError):
            future.result(timeout=3)
    assert live_workers(manager.pid) == []
    stop_and_check(family, manager, scheduler)


# === the webhook API =============================================================================

def test_webhook_api_routes_and_errors(family):
    port = free_port_pair()
    web, fixed_web = free_port_pair(), free_port_pair()
    scheduler = start_scheduler(family, port)  # scaling=no: only the test asks for groups
    dynamic = family.command(["-m", "scaler.entry_points.worker_adapter_native", address_of(port), "--max-workers",
                              "1", "--adapter-web-host", "127.0.0.1", "--adapter-web-port", str(web)], "adapter")
    fixed = family.command(["-m", "scaler.entry_points.worker_adapter_fixed_native", address_of(port),
                            "--max-workers", "1", "--adapter-web-host", "127.0.0.1", "--adapter-web-port",
                            str(fixed_web)], "fixed adapter")
    status = wait_webhook(web)
    assert status["mode"] == "dynamic" and status["groups"] == {} and status["max_worker_groups"] == 1

    assert post(web, {"action": "get_worker_adapter_info"}) == (200, {
        "max_worker_groups": 1, "workers_per_group": 1, "base_capabilities": {},
        "worker_manager_id": status["worker_manager_id"], "mode": "dynamic"})

    code, started = post(web, {"action": "start_worker_group"})
    assert code == 200, started
    group_id = started["worker_group_id"]
    assert started == {"status": "Worker group started", "worker_group_id": group_id, "worker_ids": [group_id]}
    assert group_id.startswith("NAT|")
    code, refused = post(web, {"action": "start_worker_group"})
    assert code == 429 and "at capacity" in refused["error"], (code, refused)

    code, status = http_call(web, "GET", "/status")
    assert code == 200 and list(status["groups"]) == [group_id], status
    group = status["groups"][group_id]
    assert group["worker_ids"] == [group_id] and group["alive"] is True
    assert read_stat(group["pid"]).ppid == dynamic.pid, "the group's pid is not a child of the adapter"
    assert http_call(web, "GET", "/")[1]["groups"] == status["groups"]
    [worker] = wait_workers(family, dynamic.pid, 1, with_processors=False)
    assert worker.pid == group["pid"]

    assert post(web, {"action": "shutdown_worker_group", "worker_group_id": group_id}) == (
        200, {"status": "Worker group shutdown"})
    wait_until(lambda: not is_present(proc_of(worker)), 15, "the shut-down group's worker to exit")
    code, body = post(web, {"action": "shutdown_worker_group", "worker_group_id": group_id})
    assert code == 404 and "unknown worker group" in body["error"], (code, body)
    assert post(web, {"action": "shutdown_worker_group", "worker_group_id": "NAT|nope"})[0] == 404
    assert post(web, {"action": "shutdown_worker_group"}) == (400, {"error": "worker_group_id is required"})
    assert post(web, {"action": "shutdown_worker_group", "worker_group_id": 7})[0] == 400
    code, again = post(web, {"action": "start_worker_group"})  # the slot is free again
    assert code == 200 and again["worker_group_id"] != group_id, again

    code, body = post(web, b"{not json")
    assert code == 400 and body["error"].startswith("invalid JSON"), body
    assert post(web, b"\xff\xfe")[0] == 400
    assert post(web, {}) == (400, {"error": "No action specified"})
    assert post(web, b"[1, 2]") == (400, {"error": "No action specified"})
    code, body = post(web, {"action": "frobnicate"})
    assert code == 400 and body["error"] == "Unknown action" and body["action"] == "frobnicate", body
    assert set(body["valid_actions"]) == {"get_worker_adapter_info", "start_worker_group", "shutdown_worker_group"}
    code, body = post(web, b"x" * (64 * 1024 + 1))
    assert code == 413 and "65536" in body["error"], (code, body)
    assert post(web, b"{}" + b" " * (64 * 1024 - 2))[0] == 400  # exactly the limit is read (and has no action)
    assert http_call(web, "POST", "/", headers={"Content-Length": "abc"}, body=b"")[0] == 400
    assert http_call(web, "POST", "/")[0] == 411  # no Content-Length at all
    assert http_call(web, "GET", "/nope")[0] == 404
    assert post(web, {"action": "start_worker_group"}, path="/nope")[0] == 404
    assert post(web, {"action": "get_worker_adapter_info"}, path="/action")[0] == 200

    # A fixed adapter: capacity 0, and it refuses both group actions with 405.
    fixed_status = wait_webhook(fixed_web)
    assert fixed_status["mode"] == "fixed" and fixed_status["max_worker_groups"] == 0
    code, info = post(fixed_web, {"action": "get_worker_adapter_info"})
    assert code == 200 and info["max_worker_groups"] == 0 and info["mode"] == "fixed", info
    code, body = post(fixed_web, {"action": "start_worker_group"})
    assert code == 405 and "fixed" in body["error"], (code, body)
    wait_workers(family, fixed.pid, 1, with_processors=False)
    [fixed_group] = http_call(fixed_web, "GET", "/status")[1]["groups"]
    assert post(fixed_web, {"action": "shutdown_worker_group", "worker_group_id": fixed_group})[0] == 405
    assert len(live_workers(fixed.pid)) == 1

    stop_and_check(family, dynamic, fixed, scheduler)


@pytest.mark.parametrize("links", ["http-only", "http-and-native"])
def test_scheduler_drives_an_adapter_over_http(family, links):
    """``--adapter-webhook-urls``: the scheduler starts and stops the adapter's workers over HTTP.

    An adapter also registers over its own connection to SCHEDULER_ADDRESS, and whichever
    registration comes first wins (the other is refused as a duplicate id). ``http-only``
    gives the adapter a scheduler address where nothing listens (its workers get the real
    one with -wsa), so only the webhook can drive it; ``http-and-native`` is the plain
    set-up: the scheduler first, then the adapter, and either link may drive it.
    """
    port, web = free_port_pair(), free_port_pair()
    url = "http://127.0.0.1:%d/" % web
    adapter_args = ["--max-workers", "2", "--adapter-web-host", "127.0.0.1", "--adapter-web-port", str(web)]
    if links == "http-only":
        nowhere = free_port_pair()
        adapter = family.command(["-m", "scaler.entry_points.worker_adapter_native", address_of(nowhere),
                                  "-wsa", address_of(port)] + adapter_args, "adapter")
        wait_webhook(web)
        scheduler = start_scheduler(family, port, "-pc", VANILLA, "--adapter-webhook-urls", url)
        scheduler.output.wait_for(manager_line(r"dynamic, capacity 2, via %s\)" % re.escape(url)), TIMEOUT)
    else:
        scheduler = start_scheduler(family, port, "-pc", VANILLA, "--adapter-webhook-urls", url)
        adapter = family.command(["-m", "scaler.entry_points.worker_adapter_native", address_of(port)]
                                 + adapter_args, "adapter")
        scheduler.output.wait_for(manager_line(r"dynamic, capacity 2, via "), TIMEOUT)

    with Client(address_of(port)) as client:
        ran_on = set(mapped(client, worker_pid_after, [0.01] * 20))
        stats = family.record()  # the workers are still there: idle for less than the 2 s grace
        assert ran_on and all(pid in stats and stats[pid].ppid == adapter.pid for pid in ran_on), ran_on
    scheduler.output.wait_for(r"started worker group", 1)
    # Idle again: the scheduler shuts the groups down (over HTTP in http-only).
    wait_until(lambda: not live_workers(adapter.pid, family.record()), 30, "the adapter's workers to be shut down")
    scheduler.output.wait_for(r"shut down worker group", 5)
    stop_and_check(family, adapter, scheduler)


def test_webhook_driven_adapter_replaces_a_dead_worker(family):
    port, web, nowhere = free_port_pair(), free_port_pair(), free_port_pair()
    adapter = family.command(["-m", "scaler.entry_points.worker_adapter_native", address_of(nowhere), "-wsa",
                              address_of(port), "--max-workers", "1", "--adapter-web-host", "127.0.0.1",
                              "--adapter-web-port", str(web)], "adapter")
    wait_webhook(web)
    scheduler = start_scheduler(family, port, "-pc", VANILLA, "--adapter-webhook-urls", "http://127.0.0.1:%d/" % web)
    with Client(address_of(port)) as client:
        assert client.submit(add, 1, 2).result(timeout=TIMEOUT) == 3
        [worker] = live_workers(adapter.pid, family.record())
        orphans = [proc_of(s) for s in descendants(worker.pid)]
        os.kill(worker.pid, signal.SIGKILL)
        adapter.output.wait_for(r"exited with code -9", TIMEOUT)
        try:
            # The adapter has room again (GET /status lists no group): the scheduler should use it.
            assert http_call(web, "GET", "/status")[1]["groups"] == {}
            assert client.submit(add, 2, 3).result(timeout=8) == 5
        finally:
            wait_until(lambda: all(has_exited(p) for p in orphans), 10, "the killed worker's processor to exit")
            stop_and_check(family, adapter, scheduler, exclude=orphans)


DOCS_PAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "worker_managers.rst")


def rst_code_blocks(text: str, language: str) -> List[str]:
    """The (dedented) contents of every ``.. code-block:: LANGUAGE`` of an rst text."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() == ".. code-block:: %s" % language:
            indent = len(line) - len(line.lstrip())
            content = []
            for following in lines[i + 1:]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                content.append(following)
            blocks.append(textwrap.dedent("\n".join(content)).strip("\n") + "\n")
    return blocks


def test_the_documented_toy_manager_drives_workers_over_http(family, tmp_path):
    """docs/worker_managers.rst: a manager written without scaler, serving the webhook API."""
    with open(DOCS_PAGE, encoding="utf-8") as f:
        text = f.read()
    [code] = [block for block in rst_code_blocks(text, "python") if "def do_POST" in block]
    [commands] = [block for block in rst_code_blocks(text, "bash") if "toy_manager.py" in block]
    (tmp_path / "toy_manager.py").write_text(code)
    port, web = free_port_pair(), free_port_pair()
    started = []
    for line in commands.replace("\\\n", " ").splitlines():
        words = shlex.split(line.replace(":8516", ":%d" % port).replace("8090", str(web)))
        argv = words[1:] if words[0] == "python" else COMMANDS[words[0]] + words[1:]
        started.append(family.command(argv, words[0], cwd=str(tmp_path)))
    toy, scheduler = started
    scheduler.output.wait_for(manager_line(r"dynamic, capacity 4, via http://127\.0\.0\.1:%d/\)" % web), TIMEOUT)

    with Client(address_of(port)) as client:
        futures = [client.submit(worker_pid_after, 0.05) for _ in range(60)]
        counts = [0]
        sample_until_done(futures, lambda: counts.append(len(live_workers(toy.pid, family.record()))))
        ran_on = {f.result(timeout=TIMEOUT) for f in futures}
        most = max(counts)
        stats = family.record()
        assert all(pid in stats and stats[pid].ppid == toy.pid for pid in ran_on), ran_on
    assert 1 <= most <= 4, most
    scheduler.output.wait_for(r"worker manager toy started worker group TOY\|", 1)
    wait_until(lambda: not live_workers(toy.pid, family.record()), 30, "the toy manager's workers to be shut down")
    scheduler.output.wait_for(r"worker manager toy shut down worker group TOY\|", 5)
    stop_and_check(family, toy, scheduler)


# === preload ===================================================================================

PRELOAD_MODULE = '''
import os

SEEN = None


def setup(environment, debug=True):
    global SEEN
    SEEN = (environment, debug)
    os.environ["SCALER_PRELOAD_PROBE"] = "%s debug=%s" % (environment, debug)


def fail(reason):
    raise RuntimeError("preload probe refuses to start: " + reason)
'''


@pytest.fixture
def preload_env(tmp_path):
    (tmp_path / "scaler_preload_probe.py").write_text(PRELOAD_MODULE)
    return subprocess_env(pythonpath=DEFAULT_PYTHONPATH + os.pathsep + str(tmp_path))


def test_preload_with_arguments_runs_before_tasks(family, preload_env):
    port = free_port_pair()
    scheduler = start_scheduler(family, port)
    spec = "scaler_preload_probe:setup('production', debug=False)"
    manager = family.command(["-m", "scaler.worker_manager", "baremetal_native", address_of(port), "--mode", "fixed",
                              "-n", "1", "--preload", spec], "manager", env=preload_env)
    with Client(address_of(port)) as client:
        assert client.submit(preload_effect).result(timeout=TIMEOUT) == (("production", False),
                                                                         "production debug=False")
    manager.output.wait_for(r"preloading: %s with args \('production',\) and kwargs \{'debug': False\}"
                            % re.escape(spec), 1)
    stop_and_check(family, manager, scheduler)


@pytest.mark.parametrize("restart", [False, True], ids=["default", "restart-workers"])
def test_failing_preload_stops_the_fixed_pool(family, preload_env, restart):
    port = free_port_pair()
    scheduler = start_scheduler(family, port)
    spec = "scaler_preload_probe:fail('no database')"
    manager = family.command(["-m", "scaler.worker_manager", "baremetal_native", address_of(port), "--mode", "fixed",
                              "-n", "2", "--preload", spec] + (["--restart-workers"] if restart else []),
                             "manager", env=preload_env)
    # Every worker fails, none is restarted, and the pool ends with exit code 1.
    code = exit_code_within(manager, TIMEOUT)
    out = manager.output
    out.join(5)
    text = "\n".join(out.lines)
    assert code == 1, "exit code %d; output:\n%s" % (code, text)
    # The hook ran and failed in each worker's processor: one report each, its traceback once.
    assert text.count("Traceback (most recent call last)") == 2, text
    assert text.count("RuntimeError: preload probe refuses to start: no database") == 2, text
    assert len(re.findall(r"preload %s failed" % re.escape(repr(spec)), text)) == 2, text
    failed = re.findall(r"ERROR.*worker (\S+) exited: its preload failed .*not restarting it", text)
    assert len(set(failed)) == 2, text
    assert "restarting worker" not in text
    assert "no workers left: stopping" in text
    assert scheduler.popen.poll() is None
    stop_and_check(family, scheduler)


def test_failing_preload_makes_a_dynamic_adapter_refuse_groups(family, preload_env):
    port, web = free_port_pair(), free_port_pair()
    scheduler = start_scheduler(family, port)
    adapter = family.command(["-m", "scaler.entry_points.worker_adapter_native", address_of(port), "--max-workers",
                              "3", "--adapter-web-host", "127.0.0.1", "--adapter-web-port", str(web), "--preload",
                              "scaler_preload_probe:fail('no database')"], "adapter", env=preload_env)
    wait_webhook(web, process=adapter)
    code, started = post(web, {"action": "start_worker_group"})
    assert code == 200, started
    adapter.output.wait_for(r"exited: its preload failed .*not restarting it", TIMEOUT)
    code, body = post(web, {"action": "start_worker_group"})
    assert code == 500 and "preload" in body["error"], (code, body)
    assert http_call(web, "GET", "/status")[1]["groups"] == {}
    assert adapter.popen.poll() is None, "a dynamic adapter keeps serving after a preload failure"
    stop_and_check(family, adapter, scheduler)


# === the examples of the user pages (seeds 000-003), as written ===================================
# Substitutions only: free ports for 8516 (and its + 1 for the object storage) and 8080,
# 127.0.0.1 for <SCHEDULER_IP>. Each example's command is the docs' own text.

SEED_FIXED_ADAPTER_CLI = r"""
scaler_worker_adapter_fixed_native tcp://<SCHEDULER_IP>:8516 \
    --adapter-web-host 0.0.0.0 \
    --adapter-web-port 8080 \
    --max-workers 8 \
    --logging-level INFO \
    --task-timeout-seconds 60
"""
SEED_FIXED_ADAPTER_TOML_CLI = "scaler_worker_adapter_fixed_native tcp://<SCHEDULER_IP>:8516 --config config.toml"
SEED_FIXED_ADAPTER_TOML = """
# config.toml

[fixed_native_worker_adapter]
adapter_web_host = "0.0.0.0"
adapter_web_port = 8080
max_workers = 8
logging_level = "INFO"
task_timeout_seconds = 60
"""
SEED_NATIVE_ADAPTER_CLI = r"""
scaler_worker_adapter_native tcp://<SCHEDULER_IP>:8516 \
    --adapter-web-host 0.0.0.0 \
    --adapter-web-port 8080 \
    --max-workers 4 \
    --logging-level INFO \
    --task-timeout-seconds 60
"""
SEED_NATIVE_ADAPTER_TOML_CLI = "scaler_worker_adapter_native tcp://<SCHEDULER_IP>:8516 --config config.toml"
SEED_NATIVE_ADAPTER_TOML = """
# config.toml

[native_worker_adapter]
adapter_web_host = "0.0.0.0"
adapter_web_port = 8080
max_workers = 4
logging_level = "INFO"
task_timeout_seconds = 60
"""
SEED_VANILLA_SCHEDULER = 'scaler_scheduler tcp://127.0.0.1:8516 -pc "allocate=even_load; scaling=vanilla"'
SEED_ADAPTERS_INDEX_ADAPTER = "scaler_worker_adapter_native tcp://127.0.0.1:8516 --max-workers 8"
SEED_SCHEDULER = "scaler_scheduler tcp://127.0.0.1:8516"
SEED_BAREMETAL_FIXED_4 = "scaler_worker_manager baremetal_native tcp://127.0.0.1:8516 --mode fixed --max-task-concurrency 4"
SEED_VANILLA_SCHEDULER_LONG = r"""
scaler_scheduler tcp://127.0.0.1:8516 \
--policy-content "allocate=even_load; scaling=vanilla"
"""
SEED_BAREMETAL_DYNAMIC = r"""
scaler_worker_manager baremetal_native tcp://127.0.0.1:8516 \
--max-task-concurrency 4
"""
SEED_BAREMETAL_FIXED_8 = r"""
scaler_worker_manager baremetal_native tcp://127.0.0.1:8516 \
--mode fixed \
--max-task-concurrency 8
"""
SEED_LAUNCHER = "scaler config.toml"
SEED_LAUNCHER_DYNAMIC_TOML = """
[[worker_manager]]
type = "baremetal_native"
scheduler_address = "tcp://127.0.0.1:8516"
worker_manager_id = "NAT|default"
max_task_concurrency = 4
logging_level = "INFO"
task_timeout_seconds = 60
"""
SEED_LAUNCHER_FIXED_TOML = """
[[worker_manager]]
type = "baremetal_native"
scheduler_address = "tcp://127.0.0.1:8516"
worker_manager_id = "NAT|fixed"
mode = "fixed"
max_task_concurrency = 8
logging_level = "INFO"
"""
SEED_COMBO_SCRIPT = '''
from scaler import Client, SchedulerClusterCombo

def add(a, b):
    return a + b

if __name__ == "__main__":
    cluster = SchedulerClusterCombo(address="tcp://127.0.0.1:8516", n_workers=4)

    with Client(address="tcp://127.0.0.1:8516") as client:
        future = client.submit(add, 2, 3)
        print(future.result())  # 5

    cluster.shutdown()
'''
SEED_FIXED_CLIENT = '''
from scaler import Client

def add(a, b):
    return a + b

with Client(address="tcp://127.0.0.1:8516") as client:
    future = client.submit(add, 2, 3)
    print(future.result())  # 5
'''
SEED_DYNAMIC_CLIENT = '''
from scaler import Client

def square(x):
    return x * x

with Client(address="tcp://127.0.0.1:8516") as client:
    futures = client.map(square, range(100))
    print([f.result() for f in futures])
'''
# Client.map returns results, not futures (upstream behaviour, kept on purpose: see
# reference/commands.md section 8), so the seed's last line would fail; only that line changes.
SEED_DYNAMIC_CLIENT_RUNNABLE = SEED_DYNAMIC_CLIENT.replace("print([f.result() for f in futures])", "print(futures)")

EXAMPLES = {
    # name: (commands in terminal order, TOML file or None, client script or None, expected workers or None)
    "000-fixed-adapter-cli": ([SEED_SCHEDULER, SEED_FIXED_ADAPTER_CLI], None, None, 8),
    "000-fixed-adapter-toml": ([SEED_SCHEDULER, SEED_FIXED_ADAPTER_TOML_CLI], SEED_FIXED_ADAPTER_TOML, None, 8),
    "001-native-adapter-cli": ([SEED_VANILLA_SCHEDULER, SEED_NATIVE_ADAPTER_CLI], None, None, None),
    "001-native-adapter-toml": ([SEED_VANILLA_SCHEDULER, SEED_NATIVE_ADAPTER_TOML_CLI], SEED_NATIVE_ADAPTER_TOML,
                                None, None),
    "002-vanilla-scheduler-and-adapter": ([SEED_VANILLA_SCHEDULER, SEED_ADAPTERS_INDEX_ADAPTER], None, None, None),
    "003-cli-fixed-workers": ([SEED_SCHEDULER, SEED_BAREMETAL_FIXED_4], None, SEED_FIXED_CLIENT, 4),
    "003-cli-dynamic-scaling": ([SEED_VANILLA_SCHEDULER_LONG, SEED_BAREMETAL_DYNAMIC], None,
                                SEED_DYNAMIC_CLIENT_RUNNABLE, None),
    "003-launcher-dynamic-toml": ([SEED_VANILLA_SCHEDULER_LONG, SEED_LAUNCHER], SEED_LAUNCHER_DYNAMIC_TOML,
                                  SEED_DYNAMIC_CLIENT_RUNNABLE, None),
    "003-cli-fixed-mode": ([SEED_SCHEDULER, SEED_BAREMETAL_FIXED_8], None, None, 8),
    "003-launcher-fixed-toml": ([SEED_SCHEDULER, SEED_LAUNCHER], SEED_LAUNCHER_FIXED_TOML, None, 8),
}


def substitute(text: str, port: int, web: int) -> str:
    text = text.replace("<SCHEDULER_IP>", "127.0.0.1").replace(":8516", ":%d" % port)
    return re.sub(r"\b8080\b", str(web), text)


def command_argv(command_line: str, port: int, web: int) -> List[str]:
    words = shlex.split(substitute(command_line, port, web).replace("\\\n", " "))
    assert words[0] in COMMANDS, "no module known for the command %r" % words[0]
    return COMMANDS[words[0]] + words[1:]


def the_manager(command: Spawned, stats) -> int:
    """The process that owns the workers: the command itself, or the launcher's worker manager child."""
    if "scaler.worker_manager" in " ".join(cmdline(command.pid)) or "worker_adapter" in " ".join(
            cmdline(command.pid)):
        return command.pid
    managers = [s.pid for s in children(command.pid, stats) if "scaler.worker_manager" in " ".join(cmdline(s.pid))]
    return managers[0] if managers else -1


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_user_page_example_runs_as_written(family, tmp_path, name):
    commands, toml, client_script, expected_workers = EXAMPLES[name]
    port, web = free_port_pair(), free_port_pair()
    if toml is not None:
        (tmp_path / "config.toml").write_text(substitute(textwrap.dedent(toml), port, web))
    started = []
    for index, line in enumerate(commands):
        child = family.command(command_argv(line.strip(), port, web), "terminal %d: %s" % (index + 1, line.split()[0]),
                               cwd=str(tmp_path))
        started.append(child)
        if index == 0:
            child.output.wait_for(r"listening on", TIMEOUT)
    scheduler, manager_command = started

    if expected_workers is not None:  # a fixed pool: all its workers come up at once
        def manager_pid() -> int:
            return the_manager(manager_command, all_stats())
        wait_until(lambda: manager_pid() > 0, TIMEOUT, "the worker manager process")
        wait_workers(family, manager_pid(), expected_workers)
    if "--adapter-web-port" in " ".join(commands) or "adapter_web_port" in (toml or ""):
        status = wait_webhook(web)  # bound to 0.0.0.0, reached on 127.0.0.1
        if expected_workers is not None:
            assert len(status["groups"]) == expected_workers, status

    if client_script is not None:  # "Terminal 3": the page's client, saved as my_client.py
        (tmp_path / "my_client.py").write_text(substitute(client_script, port, web))
        client = family.command(["my_client.py"], "terminal 3: python my_client.py", cwd=str(tmp_path),
                                env=subprocess_env(pythonpath=DEFAULT_PYTHONPATH))
        assert exit_code_within(client, TIMEOUT) == 0, client.output.text()
        client.output.join(5)
        expected = "5" if "def add" in client_script else str([x * x for x in range(100)])
        assert client.output.lines and client.output.lines[-1] == expected, client.output.text()
    else:
        with Client(address_of(port)) as client:
            assert client.submit(add, 2, 3).result(timeout=TIMEOUT) == 5
            assert mapped(client, square, range(20)) == [x * x for x in range(20)]
    manager_pid = the_manager(manager_command, family.record())
    assert live_workers(manager_pid), "no worker under the manager of %s" % name
    if expected_workers is not None:
        assert len(live_workers(manager_pid)) == expected_workers

    stop_and_check(family, manager_command, scheduler)


def test_user_page_combo_example_runs_as_written(family, tmp_path):
    port = free_port_pair()
    (tmp_path / "combo_example.py").write_text(substitute(SEED_COMBO_SCRIPT, port, 0))
    script = family.command(["combo_example.py"], "python combo_example.py", cwd=str(tmp_path),
                            env=subprocess_env(pythonpath=DEFAULT_PYTHONPATH))

    # While it runs, record its tree: a scheduler and a pool of 4 workers.
    def complete() -> bool:
        stats = family.record()
        return any(len(ready_workers(s.pid, stats)) == 4 for s in descendants(script.pid, stats))

    wait_until(lambda: complete() or script.popen.poll() is not None, TIMEOUT, "the combo's 4 workers")
    assert exit_code_within(script, TIMEOUT) == 0, script.output.text()
    script.output.join(5)
    assert "5" in script.output.lines, script.output.text()
    leftovers = family.leftovers()
    assert not leftovers, "still present after the example exited:\n" + family.describe(leftovers)
    assert not [s for s in group_members(script.pid) if s.state not in ("Z", "X")]


def test_every_seed_command_is_covered():
    """The SEED_* constants are the seeds' own text: every command (with its continuation
    lines) and every TOML line of seeds 000-003 appears in them verbatim."""
    seeds = os.path.join(os.sep, "work", "shared", "seeds")
    if not os.path.isdir(seeds):
        pytest.skip("the seed pages are not on this machine")
    ours = "\n".join(str(v) for k, v in globals().items() if k.startswith("SEED_"))
    flat_ours = " ".join(ours.replace("\\\n", " ").split())
    our_lines = {line.strip() for line in ours.splitlines()}
    missing = []
    checked = 0
    for name in sorted(os.listdir(seeds)):
        if not name.startswith(("000", "001", "002", "003")):
            continue
        with open(os.path.join(seeds, name), encoding="utf-8") as f:
            lines = [line.strip() for line in f.read().splitlines()]
        for index, line in enumerate(lines):
            if line.startswith("$ "):
                line = line[2:]
            if re.match(r"^(scaler_\w+|scaler) ", line) and ")" not in line:  # not prose about a command
                command = [line]
                while command[-1].endswith("\\") and index + len(command) < len(lines):
                    command.append(lines[index + len(command)])
                flat = " ".join(" ".join(part.rstrip("\\") for part in command).split())
                checked += 1
                if flat not in flat_ours:
                    missing.append("%s: %s" % (name, flat))
            elif re.match(r"^(\[\[?\w+\]\]?|\w+ = .+)$", line):  # a TOML section or key line
                checked += 1
                if line not in our_lines:
                    missing.append("%s: %s" % (name, line))
    assert checked >= 30, "the seed pages changed shape: only %d lines recognised" % checked
    assert not missing, "seed lines not exercised here:\n" + "\n".join(missing)
