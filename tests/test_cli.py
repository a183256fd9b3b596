"""The commands as real processes: ``python -m`` forms, -h/--version, bad files, seed command lines.

Every process is started through the ``procs`` fixture (own process group, SIGKILLed at the
end of the test whatever happens) and every wait has a deadline.
"""

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from e2e_support import (REPO_ROOT, combo_tree_complete, descendants, exit_code_within, free_port_pair,
                         has_exited, proc_of, subprocess_env, wait_for_tree)
from scaler.version import __version__

MODULE_FORMS = [
    ["scaler"],
    ["scaler.entry_points.scaler"],
    ["scaler.scheduler"],
    ["scaler.entry_points.scheduler"],
    ["scaler.object_storage"],
    ["scaler.entry_points.object_storage"],
    ["scaler.cluster"],
    ["scaler.entry_points.cluster"],
    ["scaler.worker_manager"],
    ["scaler.worker_manager", "baremetal_native"],
    ["scaler.entry_points.worker_manager", "baremetal_native"],
    ["scaler.entry_points.worker_adapter_native"],
    ["scaler.entry_points.worker_adapter_fixed_native"],
]
CONSOLE_SCRIPTS = ["scaler", "scaler_scheduler", "scaler_object_storage_server", "scaler_cluster",
                   "scaler_worker_manager", "scaler_worker_adapter_native", "scaler_worker_adapter_fixed_native"]


def run_all(commands, timeout=60):
    """Run commands concurrently; return [(returncode, stdout, stderr)]."""
    env = subprocess_env()
    popens = [subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, start_new_session=True) for cmd in commands]
    results = []
    try:
        for popen in popens:
            out, err = popen.communicate(timeout=timeout)
            results.append((popen.returncode, out.decode(), err.decode()))
    finally:
        for popen in popens:
            if popen.poll() is None:
                popen.kill()
                popen.wait()
    return results


def test_module_forms_print_version_and_help():
    commands = []
    for form in MODULE_FORMS:
        commands.append([sys.executable, "-m", *form, "--version"])
        commands.append([sys.executable, "-m", *form, "-h"])
    results = run_all(commands)
    for command, (code, out, err) in zip(commands, results):
        assert code == 0, (command, err)
        if command[-1] == "--version":  # "<the command> <version>[ (scaler)]": it names itself
            assert out.split()[0].startswith("scaler") and __version__ in out.split(), (command, out)
        else:
            assert out.startswith("usage: "), command
            if command[2:] != ["scaler.worker_manager", "-h"]:
                assert "(default: " in " ".join(out.split()), command


def test_installed_console_scripts():
    bindir = os.path.dirname(sys.executable)
    scripts = [os.path.join(bindir, name) for name in CONSOLE_SCRIPTS]
    if not all(os.path.exists(script) for script in scripts):
        pytest.skip("console scripts are not installed beside %s" % sys.executable)
    results = run_all([[script, "--version"] for script in scripts])
    for script, (code, out, _err) in zip(scripts, results):
        assert code == 0 and out.split()[0] == os.path.basename(script) and __version__ in out.split(), (script, out)


def test_bad_values_in_real_processes(tmp_path):
    bad = tmp_path / "example.toml"
    bad.write_text('[scheduler]\nscheduler_address = "tcp://127.0.0.1:70000"\n'
                   '[cluster]\nscheduler_address = "tcp://127.0.0.1:8516"\nnum_of_worker = 8\n'
                   '[[worker_manager]]\ntype = "baremetal_native"\nmax_task_concurrency = "four"\n')
    commands = [
        [sys.executable, "-m", "scaler.scheduler", "-c", str(bad)],
        [sys.executable, "-m", "scaler.cluster", "--config", str(bad)],
        [sys.executable, "-m", "scaler.worker_manager", "baremetal_native", "-c", str(bad)],
        [sys.executable, "-m", "scaler.worker_manager", "bare_metal", "tcp://127.0.0.1:1"],
        [sys.executable, "-m", "scaler.cluster", "tcp://127.0.0.1:8516", "-n", "eight"],
    ]
    expected = [
        "scaler_scheduler: error: %s [scheduler] scheduler_address: expected an address like tcp://HOST:PORT, "
        "tls://HOST:PORT or ipc://PATH; address 'tcp://127.0.0.1:70000': port 70000 is out of range 1-65535" % bad,
        "scaler_cluster: error: %s [cluster] num_of_worker: unknown key (did you mean 'num_of_workers'?)" % bad,
        "scaler_worker_manager baremetal_native: error: %s [[worker_manager]] #1 max_task_concurrency: expected an "
        "integer >= -1, got 'four'" % bad,
        "scaler_worker_manager: error: unknown worker manager type 'bare_metal' (did you mean 'baremetal_native'?); "
        "valid types: baremetal_native",
        "scaler_cluster: error: argument -n/--num-of-workers: expected an integer >= 0, got 'eight'",
    ]
    for command, message, (code, out, err) in zip(commands, expected, run_all(commands)):
        assert code == 2, (command, err)
        assert "Traceback" not in err and out == ""
        assert err.splitlines()[-1] == message
    # a file error is exactly one line (no usage text)
    assert len(run_all(commands[:1])[0][2].splitlines()) == 1


def test_busy_port_is_one_line(procs):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        port = blocker.getsockname()[1]
        child = procs.python(["-m", "scaler.scheduler", "tcp://127.0.0.1:%d" % port], "scheduler")
        assert exit_code_within(child, 30) == 1
        child.output.join(5)
        lines = [line for line in child.output.lines if line.strip()]
        assert lines == ["scaler_scheduler: error: cannot listen on tcp://127.0.0.1:%d: Address already in use"
                         % port], child.output.text()
    finally:
        blocker.close()


def _stop_and_check(children, recorded, sig=signal.SIGTERM):
    for child in reversed(children):
        os.kill(child.pid, sig)
        assert exit_code_within(child, 30) == 0, child.output.text()
    from e2e_support import wait_until
    wait_until(lambda: all(has_exited(p) for p in recorded), 30, "every process of the stack to exit")


def _run_task(address):
    from scaler import Client
    with Client(address=address, timeout_seconds=30) as client:
        return client.submit(pow, 2, 10).result(timeout=60)


def test_seed_003_fixed_workers_from_the_command_line(procs):
    port = free_port_pair()
    address = "tcp://127.0.0.1:%d" % port
    scheduler = procs.python(["-m", "scaler.scheduler", address], "scheduler")
    scheduler.output.wait_for("listening on %s" % re.escape(address), 30)
    manager = procs.python(["-m", "scaler.worker_manager", "baremetal_native", address, "--mode", "fixed",
                            "--max-task-concurrency", "2"], "worker manager")
    tree = wait_for_tree(manager.pid, combo_tree_complete(manager.pid, 2), 60, "2 workers with processors")
    assert _run_task(address) == 1024
    recorded = [proc_of(s) for s in tree] + [proc_of(s) for s in descendants(scheduler.pid)]
    _stop_and_check([scheduler, manager], recorded)


@pytest.mark.parametrize("manager_args", [
    ["scaler.entry_points.worker_adapter_native", "{address}", "--max-workers", "2"],  # seed 002
    ["scaler.worker_manager", "baremetal_native", "{address}", "--max-task-concurrency", "4"],  # seed 003
], ids=["adapter", "worker_manager"])
def test_seed_002_and_003_dynamic_workers_with_vanilla_scaling(procs, manager_args):
    port = free_port_pair()
    address = "tcp://127.0.0.1:%d" % port
    scheduler = procs.python(["-m", "scaler.scheduler", address, "--policy-content",
                              "allocate=even_load; scaling=vanilla"], "scheduler")
    scheduler.output.wait_for("listening on", 30)
    manager = procs.python(["-m"] + [arg.format(address=address) for arg in manager_args], "manager")
    assert _run_task(address) == 1024  # the scheduler asked the manager for a worker
    _stop_and_check([scheduler, manager], [proc_of(s) for s in descendants(manager.pid)])


def test_seed_004_unprotected_scheduler_can_be_shut_down_by_a_client(procs):
    from scaler import Client
    port = free_port_pair()
    address = "tcp://127.0.0.1:%d" % port
    scheduler = procs.python(["-m", "scaler.scheduler", address, "-p", "False"], "scheduler")
    scheduler.output.wait_for("listening on", 30)
    with Client(address=address, timeout_seconds=30) as client:
        client.shutdown()
    assert exit_code_within(scheduler, 30) == 0


def test_seed_004_components_from_one_file_with_scenario_2_override(procs, tmp_path):
    from test_config import SEED_004_UNIFIED
    port = free_port_pair()
    text = (SEED_004_UNIFIED.replace("6378", str(port)).replace("6379", str(port + 1))
            .replace("6380", str(port + 2)).replace("/var/log/scaler", str(tmp_path / "log")))
    path = tmp_path / "example_config.toml"
    path.write_text(text)
    storage = procs.python(["-m", "scaler.object_storage", "--config", str(path)], "object storage")
    scheduler = procs.python(["-m", "scaler.scheduler", "--config", str(path)], "scheduler")
    # Scenario 2: the file says 8 workers, the flag wins (2 keeps the test light; 12 is checked in test_config)
    cluster = procs.python(["-m", "scaler.cluster", "--config", str(path), "--num-of-workers", "2"], "cluster")
    tree = wait_for_tree(cluster.pid, combo_tree_complete(cluster.pid, 2), 60, "the cluster's 2 workers")
    assert _run_task("tcp://127.0.0.1:%d" % port) == 1024
    assert "listening on" in (tmp_path / "log" / "scheduler.log").read_text()
    storage.output.wait_for("listening on tcp://127.0.0.1:%d" % (port + 1), 10)
    _stop_and_check([storage, scheduler, cluster], [proc_of(s) for s in tree])


def test_uvloop_is_reported_and_ignored(procs):
    port = free_port_pair()
    scheduler = procs.python(["-m", "scaler.scheduler", "tcp://127.0.0.1:%d" % port, "-e", "uvloop"], "scheduler")
    scheduler.output.wait_for("uvloop: this build of scaler runs its own selectors-based event loop", 30)
    scheduler.output.wait_for("listening on", 30)
    assert scheduler.popen.poll() is None  # carried on
    os.kill(scheduler.pid, signal.SIGTERM)
    assert exit_code_within(scheduler, 30) == 0
