"""``scaler CONFIG.toml``: a working stack from one file, prefixed output, stopping, child death.

After each launcher exits, every process it started (recorded from /proc while the stack
ran) must be gone. All processes are started through the ``procs`` fixture, so a failing
test still leaves nothing behind; every wait has a deadline.
"""

import json
import os
import re
import signal
import socket
import threading
import urllib.request

import pytest

from e2e_support import (all_stats, children, cmdline, combo_tree_complete, descendants, describe, exit_code_within,
                         free_port_pair, has_exited, proc_of, wait_for_tree, wait_until)
from scaler.io.address import free_tcp_port
from test_config import SEED_003_DYNAMIC, SEED_003_FIXED, SEED_004_UNIFIED


def write(tmp_path, text, name="config.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def started_pid(launcher, name, timeout=30):
    line = launcher.output.wait_for(r"^\[scaler\] started %s \(pid \d+\)$" % re.escape(name), timeout)
    return int(re.search(r"pid (\d+)", line).group(1))


def stack_tree(launcher_pid, n_components, pool_pid=None, n_workers=0):
    """The launcher has its components, and the pool (if any) its workers with their processors."""
    pool_shape = combo_tree_complete(pool_pid, n_workers) if pool_pid else None

    def shape(stats):
        live = [s for s in children(launcher_pid, stats) if s.state != "Z"]
        return len(live) == n_components and (pool_shape is None or pool_shape(stats))
    return shape


def assert_all_exited(recorded, timeout=30):
    wait_until(lambda: all(has_exited(p) for p in recorded), timeout,
               "every process of the stack to exit; still there:\n%s" % describe(recorded))


def run_task(address):
    from scaler import Client
    with Client(address=address, timeout_seconds=30) as client:
        return client.submit(pow, 2, 10).result(timeout=60)


def stop_lines(launcher):
    return [line for line in launcher.output.lines if line.startswith("[scaler] stopping ")]


def test_seed_004_unified_file_starts_a_working_stack(procs, tmp_path):
    port = free_port_pair()
    web_port = free_tcp_port()
    text = (SEED_004_UNIFIED.replace("6378", str(port)).replace("6379", str(port + 1))
            .replace("6380", str(port + 2)).replace("8081", str(web_port))
            .replace("/var/log/scaler", str(tmp_path / "log")))
    launcher = procs.python(["-m", "scaler", write(tmp_path, text, "example_config.toml")], "launcher")
    cluster_pid = started_pid(launcher, "cluster")
    wait_for_tree(launcher.pid, stack_tree(launcher.pid, 4, cluster_pid, 8), 90, "the stack with 8 workers")
    assert run_task("tcp://127.0.0.1:%d" % port) == 1024
    recorded = [proc_of(s) for s in descendants(launcher.pid)]
    assert len(recorded) >= 4 + 8 * 2  # storage, scheduler, cluster, webui; 8 workers with a processor each

    launcher.output.wait_for(r"^\[object_storage_server\] .*listening on tcp://127\.0\.0\.1:%d" % (port + 1), 10)
    launcher.output.wait_for(r"^\[scheduler\] .*listening on tcp://127\.0\.0\.1:%d" % port, 10)
    launcher.output.wait_for(r"^\[cluster\] ", 10)
    # [webui] starts the web dashboard, reading the scheduler's monitor address
    launcher.output.wait_for(r"^\[webui\] .*dashboard of tcp://127\.0\.0\.1:%d on http://127\.0\.0\.1:%d"
                             % (port + 2, web_port), 30)
    def dashboard_sees_the_workers():
        with urllib.request.urlopen("http://127.0.0.1:%d/api/status" % web_port, timeout=30) as response:
            document = json.loads(response.read())
        return document["connected"] and len(document["status"]["workers"]) == 8
    wait_until(dashboard_sees_the_workers, 60, "the dashboard to show the 8 workers")
    assert "listening on" in (tmp_path / "log" / "scheduler.log").read_text()

    os.kill(launcher.pid, signal.SIGINT)
    assert exit_code_within(launcher, 60) == 0
    assert_all_exited(recorded)
    assert [line.split(" (")[0] for line in stop_lines(launcher)] == [
        "[scaler] stopping webui", "[scaler] stopping cluster", "[scaler] stopping scheduler",
        "[scaler] stopping object_storage_server"]
    assert launcher.output.lines[-1] == "[scaler] all components stopped"


def test_sigterm_stops_everything_in_reverse_order(procs, tmp_path):
    port = free_port_pair()
    text = ('[scheduler]\nbind_address = "tcp://127.0.0.1:%d"\nlogging_level = "WARNING"\n\n'
            '[[worker_manager]]\ntype = "baremetal_native"\nscheduler_address = "tcp://127.0.0.1:%d"\n'
            'worker_manager_id = "NAT|fixed"\nmode = "fixed"\nmax_task_concurrency = 1\n' % (port, port))
    launcher = procs.python(["-m", "scaler.entry_points.scaler", write(tmp_path, text)], "launcher")
    manager_pid = started_pid(launcher, "worker_manager NAT|fixed")
    wait_for_tree(launcher.pid, stack_tree(launcher.pid, 2, manager_pid, 1), 60, "scheduler and manager")
    assert run_task("tcp://127.0.0.1:%d" % port) == 1024
    recorded = [proc_of(s) for s in descendants(launcher.pid)]
    os.kill(launcher.pid, signal.SIGTERM)
    assert exit_code_within(launcher, 60) == 0
    assert_all_exited(recorded)
    assert "[scaler] received SIGTERM: stopping all components" in launcher.output.lines
    assert [line.split(" (")[0] for line in stop_lines(launcher)] == [
        "[scaler] stopping worker_manager NAT|fixed", "[scaler] stopping scheduler"]
    assert any(line.startswith("[worker_manager NAT|fixed] ") for line in launcher.output.lines)
    with socket.socket() as probe:  # nothing listens on the port any more (a restart could bind it)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_a_dying_component_stops_the_rest(procs, tmp_path):
    port = free_port_pair()
    text = ('[scheduler]\nscheduler_address = "tcp://127.0.0.1:%d"\n\n'
            '[cluster]\nscheduler_address = "tcp://127.0.0.1:%d"\nnum_of_workers = 1\n' % (port, port))
    launcher = procs.python(["-m", "scaler", write(tmp_path, text)], "launcher")
    scheduler_pid = started_pid(launcher, "scheduler")
    cluster_pid = started_pid(launcher, "cluster")
    wait_for_tree(launcher.pid, stack_tree(launcher.pid, 2, cluster_pid, 1), 60, "scheduler and cluster")
    recorded = [proc_of(s) for s in descendants(launcher.pid)]
    os.kill(scheduler_pid, signal.SIGKILL)
    assert exit_code_within(launcher, 60) == 128 + signal.SIGKILL
    assert_all_exited(recorded)
    assert "[scaler] scheduler (pid %d) was killed by SIGKILL (exit code -9): stopping the other components" \
        % scheduler_pid in launcher.output.lines
    assert [line.split(" (")[0] for line in stop_lines(launcher)] == ["[scaler] stopping cluster"]


def test_a_component_ending_on_its_own_ends_the_stack(procs, tmp_path):
    port = free_port_pair()
    text = ('[scheduler]\nscheduler_address = "tcp://127.0.0.1:%d"\n\n'
            '[cluster]\nscheduler_address = "tcp://127.0.0.1:%d"\nnum_of_workers = 1\n' % (port, port))
    launcher = procs.python(["-m", "scaler", write(tmp_path, text)], "launcher")
    cluster_pid = started_pid(launcher, "cluster")
    wait_for_tree(launcher.pid, stack_tree(launcher.pid, 2, cluster_pid, 1), 60, "scheduler and cluster")
    recorded = [proc_of(s) for s in descendants(launcher.pid)]
    os.kill(cluster_pid, signal.SIGTERM)  # a clean stop of one component, not asked by the launcher
    code = exit_code_within(launcher, 60)
    line = launcher.output.wait_for(r"^\[scaler\] cluster \(pid %d\) exited with exit code" % cluster_pid, 5)
    assert line == "[scaler] cluster (pid %d) exited with exit code %d: stopping the other components" % (
        cluster_pid, code)
    assert_all_exited(recorded)
    assert [line.split(" (")[0] for line in stop_lines(launcher)] == ["[scaler] stopping scheduler"]


def test_sigint_early_in_startup_leaves_nothing(procs, tmp_path):
    port = free_port_pair()
    marker = "tcp://127.0.0.1:%d" % port
    text = ('[scheduler]\nscheduler_address = "%s"\n\n[cluster]\nscheduler_address = "%s"\nnum_of_workers = 2\n'
            % (marker, marker))
    launcher = procs.python(["-m", "scaler", write(tmp_path, text)], "launcher")
    seen = set()
    done = threading.Event()

    def watch():  # record every descendant while the launcher lives
        while not done.is_set():
            seen.update(proc_of(s) for s in descendants(launcher.pid))
            done.wait(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        started_pid(launcher, "scheduler")
        os.kill(launcher.pid, signal.SIGINT)
        assert exit_code_within(launcher, 60) == 0
    finally:
        done.set()
        watcher.join(5)
    assert seen
    assert_all_exited(list(seen))

    def leftovers():  # anything at all still carrying this stack's address
        return [s for s in all_stats().values()
                if s.state != "Z" and s.pid != os.getpid() and any(marker in part for part in cmdline(s.pid))]
    wait_until(lambda: not leftovers(), 30, "no process with %s in its command line" % marker)


@pytest.mark.parametrize("text,policy", [
    (SEED_003_DYNAMIC, "allocate=even_load; scaling=vanilla"),  # dynamic mode needs a scaling policy
    (SEED_003_FIXED, "allocate=even_load; scaling=no"),
], ids=["dynamic", "fixed"])
def test_only_worker_managers_seed_003(procs, tmp_path, text, policy):
    port = free_port_pair()
    address = "tcp://127.0.0.1:%d" % port
    scheduler = procs.python(["-m", "scaler.scheduler", address, "--policy-content", policy], "scheduler")
    scheduler.output.wait_for("listening on", 30)
    path = write(tmp_path, text.replace("tcp://127.0.0.1:8516", address))
    launcher = procs.python(["-m", "scaler", path], "launcher")
    assert run_task(address) == 1024
    recorded = [proc_of(s) for s in descendants(launcher.pid)]
    os.kill(launcher.pid, signal.SIGINT)
    assert exit_code_within(launcher, 60) == 0
    assert_all_exited(recorded)
    os.kill(scheduler.pid, signal.SIGTERM)
    assert exit_code_within(scheduler, 30) == 0


def test_busy_port_stops_the_launch_before_anything_starts(procs, tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        text = '[scheduler]\nscheduler_address = "tcp://127.0.0.1:%d"\n' % port
        launcher = procs.python(["-m", "scaler", write(tmp_path, text)], "launcher")
        assert exit_code_within(launcher, 30) == 1
        launcher.output.join(5)
        assert launcher.output.lines == [
            "scaler: error: [scheduler] cannot listen on tcp://127.0.0.1:%d: Address already in use" % port]


@pytest.mark.parametrize("text,code,first_line", [
    ('[webui]\nweb_port = 8081\n', 2,
     "scaler: error: {path}: nothing to start: expected at least one of [object_storage_server], [scheduler], "
     "[cluster] or [[worker_manager]]"),
    ('[cluster]\nscheduler_address = "tcp://127.0.0.1:1"\nnum_of_worker = 8\n', 2,
     "scaler: error: {path} [cluster] num_of_worker: unknown key (did you mean 'num_of_workers'?)"),
    (SEED_003_DYNAMIC, 0, "[scaler] would start worker_manager NAT|default: dynamic mode, max_task_concurrency 4, "
                          "for tcp://127.0.0.1:8516"),
])
def test_check_and_file_errors(procs, tmp_path, text, code, first_line):
    path = write(tmp_path, text)
    launcher = procs.python(["-m", "scaler", "--check", path], "launcher")
    assert exit_code_within(launcher, 30) == code
    launcher.output.join(5)
    assert launcher.output.lines[0] == first_line.format(path=path)
    assert not any("Traceback" in line for line in launcher.output.lines)
