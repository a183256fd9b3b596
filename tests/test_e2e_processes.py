"""End to end: process lifecycles. Nothing outlives ``shutdown()``, nor the process that owns
a combo, and the command-line components stop cleanly on a signal.

Process trees are read from ``/proc`` (pid, parent pid, start time, state): a process counts
as "gone" only when its ``/proc`` entry is gone, so an unreaped zombie is a failure.
"""

import os
import signal
import sys
import time

import pytest

from e2e_support import (combo_tree_complete, descendants, describe, exit_code_within, framework_children,
                         free_port_pair, has_exited, identify, is_framework, is_present, proc_of, read_stat,
                         role, subprocess_env, wait_for_tree, wait_until)
from scaler import Client
from scaler.utility.exceptions import ClientShutdownException, DisconnectedError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="e2e tests need Linux")

TIMEOUT = 60


def add(a, b):
    return a + b


def announce_and_sleep(port, seconds):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"%d\n" % os.getpid())
    time.sleep(seconds)
    return seconds


def combo_processes(combo, n_workers):
    """The scheduler, the cluster process, its workers and their processors, once all are up."""
    cluster_pid = combo._worker_manager_process.pid
    tree = wait_for_tree(cluster_pid, combo_tree_complete(cluster_pid, n_workers), TIMEOUT,
                         "%d workers with processors under the cluster process" % n_workers)
    scheduler = identify(combo._scheduler.pid)
    procs = [scheduler, identify(cluster_pid)] + [proc_of(s) for s in tree]
    procs += [proc_of(s) for s in descendants(scheduler.pid) if is_framework(s)]
    return procs


# --- shutdown() -------------------------------------------------------------------------------

@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_shutdown_leaves_no_process(make_combo, announcements, busy):
    combo = make_combo(n_workers=2)
    with Client(combo.get_address()) as client:
        assert client.map(add, range(10), range(10)) == [2 * i for i in range(10)]
        procs = combo_processes(combo, 2)
        running = None
        if busy:  # a processor deep in user code when the cluster goes away
            running = client.submit(announce_and_sleep, announcements.port, 300)
            announcements.next_pid()

        combo.shutdown()

        leftovers = [p for p in procs if is_present(p)]
        assert not leftovers, "still present after shutdown():\n" + describe(leftovers)
        if running is not None:
            # The client learns the cluster is gone; the future does not hang.
            with pytest.raises((ClientShutdownException, DisconnectedError)):
                running.result(timeout=30)
    combo.shutdown()  # idempotent


def test_shutdown_twice_and_context_manager():
    from scaler import SchedulerClusterCombo

    with SchedulerClusterCombo(n_workers=1, logging_level="WARNING") as combo:
        with Client(combo.get_address()) as client:
            assert client.submit(add, 1, 2).result(timeout=TIMEOUT) == 3
        procs = combo_processes(combo, 1)
    leftovers = [p for p in procs if is_present(p)]
    assert not leftovers, "still present after leaving the with block:\n" + describe(leftovers)
    combo.shutdown()


# --- the owner dies -------------------------------------------------------------------------

OWNER_SCRIPT = r"""
import os, socket, sys, time
from scaler import Client, SchedulerClusterCombo

def add(a, b):
    return a + b

def sleepy(port):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"%d\n" % os.getpid())
    time.sleep(300)

combo = SchedulerClusterCombo(n_workers=2, logging_level="WARNING")
client = Client(combo.get_address())
assert client.map(add, range(10), range(10)) == [2 * i for i in range(10)]
future = client.submit(sleepy, int(sys.argv[1]))  # one processor busy in user code
print("READY", os.getpid(), flush=True)
sys.stdin.readline()  # until the test kills us
"""


def test_killing_the_owner_stops_every_descendant(procs, announcements):
    owner = procs.python(["-c", OWNER_SCRIPT, str(announcements.port)], "owner", stdin=True)
    owner.output.wait_for("^READY", TIMEOUT)
    announcements.next_pid()  # a processor is running the sleepy task

    def complete(stats):
        live = [s for s in descendants(owner.pid, stats) if s.state != "Z" and is_framework(s)]
        return len(live) == 6  # scheduler, cluster, 2 workers, 2 processors

    tree = wait_for_tree(owner.pid, complete, TIMEOUT, "the owner's 6 descendants")
    family = [proc_of(s) for s in tree]

    os.kill(owner.pid, signal.SIGKILL)
    owner.popen.wait(TIMEOUT)

    # Orphans are re-parented to PID 1; an exited one that nobody reaps counts as exited.
    wait_until(lambda: all(has_exited(p) for p in family), 30,
               "every descendant of the killed owner to exit (lifelines):\n" + describe(family))


# --- a stop while starting --------------------------------------------------------------------

# Runs a component with its process spawner wrapped: each child it starts is recorded in a
# file, then this process sends itself SIGTERM at once, as if the stop landed in the very
# moment between starting a child and taking charge of it.
STOP_AS_IT_SPAWNS = """
import dataclasses, json, os, signal, sys
from scaler.utility import process as proc_util

def stop_as_it_starts(real):
    def start(*args, **kwargs):
        child = real(*args, **kwargs)  # (a forked child never returns from fork_child)
        with open(sys.argv[1], "a") as f:
            f.write("%d\\n" % child.pid)
        os.kill(os.getpid(), signal.SIGTERM)
        return child
    return start

proc_util.spawn = stop_as_it_starts(proc_util.spawn)  # a new interpreter
proc_util.fork_child = stop_as_it_starts(proc_util.fork_child)  # a fork (a worker's first processor)
if sys.argv[2] == "worker":
    from scaler.config.components import WorkerConfig
    from scaler.worker.__main__ import main
    config = WorkerConfig(scheduler_address=sys.argv[3])
    sys.exit(main(["--config-json", json.dumps(dataclasses.asdict(config))]))
from scaler.cluster.__main__ import main
sys.exit(main([sys.argv[3], "-n", "2"]))
"""


@pytest.mark.parametrize("component", ["worker", "cluster"])
def test_a_stop_landing_as_a_child_starts_reaps_it(procs, tmp_path, component):
    """SIGTERM right after a worker started its processor (or the cluster its first worker),
    before anything else ran: the component stops cleanly and reaps that child before it
    exits; it is not left to run on as an orphan."""
    script = tmp_path / "stop_as_it_spawns.py"
    script.write_text(STOP_AS_IT_SPAWNS)
    record = tmp_path / "spawned"
    address = "tcp://127.0.0.1:%d" % free_port_pair()  # nobody there: the worker keeps dialling
    started = procs.python([str(script), str(record), component, address], component, env=subprocess_env())
    assert exit_code_within(started, 30) == 0, started.output.text()
    pids = [int(line) for line in record.read_text().split()]
    assert pids, started.output.text()
    left = [pid for pid in pids if read_stat(pid) is not None]  # alive, or a zombie nobody reaped
    assert not left, "not reaped by the %s before it exited:\n%s\n%s" % (
        component, describe(identify(pid) for pid in left if read_stat(pid) is not None), started.output.text())


# --- the three-terminal flow ----------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_command_line_scheduler_and_cluster(procs, signum):
    port = free_port_pair()
    address = "tcp://127.0.0.1:%d" % port
    env = subprocess_env()
    scheduler = procs.python(["-m", "scaler.scheduler", address], "scheduler", env=env)
    cluster = procs.python(["-m", "scaler.cluster", address, "-n", "2"], "cluster", env=env)

    with Client(address) as client:
        assert client.submit(add, 2, 3).result(timeout=TIMEOUT) == 5
        assert client.map(add, [1, 2, 3], [10, 20, 30]) == [11, 22, 33]
        ref = client.send_object(list(range(1000)))
        assert client.submit(len, ref).result(timeout=TIMEOUT) == 1000

    def complete(stats):
        workers = framework_children(cluster.pid, stats)
        return len(workers) == 2 and all(framework_children(w.pid, stats) for w in workers)

    tree = wait_for_tree(cluster.pid, complete, TIMEOUT, "2 workers with processors under the cluster")
    family = [identify(scheduler.pid), identify(cluster.pid)] + [proc_of(s) for s in tree]
    family += [proc_of(s) for s in descendants(scheduler.pid) if is_framework(s)]
    workers = [p for p in family[2:] if p.pid in {w.pid for w in framework_children(cluster.pid)}]
    assert len(workers) == 2 and all(role(p.pid) == "worker" for p in workers), describe(family)
    assert sorted(role(p.pid) for p in family[2:]) == ["processor", "processor", "worker", "worker"], describe(family)

    for child in (cluster, scheduler):
        child.popen.send_signal(signum)
    assert exit_code_within(cluster, 20) == 0, cluster.output.text()
    assert exit_code_within(scheduler, 20) == 0, scheduler.output.text()
    leftovers = [p for p in family if is_present(p)]
    assert not leftovers, "still present after both exited:\n" + describe(leftovers)


def test_client_raises_when_the_scheduler_dies(procs, announcements):
    port = free_port_pair()
    address = "tcp://127.0.0.1:%d" % port
    env = subprocess_env()
    scheduler = procs.python(["-m", "scaler.scheduler", address], "scheduler", env=env)
    procs.python(["-m", "scaler.cluster", address, "-n", "1"], "cluster", env=env)
    with Client(address, heartbeat_interval_seconds=1) as client:
        running = client.submit(announce_and_sleep, announcements.port, 300)
        announcements.next_pid()
        os.kill(scheduler.pid, signal.SIGKILL)
        with pytest.raises(DisconnectedError):
            running.result(timeout=30)
        with pytest.raises(DisconnectedError):  # the client is finished: it says so at once
            client.submit(add, 1, 1).result(timeout=30)
    scheduler.popen.wait(TIMEOUT)


# --- Client.shutdown() ----------------------------------------------------------------------

def test_client_cannot_shut_down_a_protected_cluster(shared_combo):
    with Client(shared_combo.get_address()) as client:
        with pytest.raises(ValueError) as info:
            client.shutdown()
        assert "protected" in str(info.value).lower()
    with Client(shared_combo.get_address()) as client:
        assert client.submit(add, 1, 2).result(timeout=TIMEOUT) == 3


def test_client_shuts_down_an_unprotected_cluster(make_combo):
    combo = make_combo(n_workers=2, protected=False)
    with Client(combo.get_address()) as client:
        assert client.submit(add, 1, 2).result(timeout=TIMEOUT) == 3
        family = combo_processes(combo, 2)
        client.shutdown()
    assert exit_code_within(combo._scheduler.popen, 30) == 0
    wait_until(lambda: all(has_exited(p) for p in family), 30,
               "the workers and the cluster process to exit after Client.shutdown()")
    combo.shutdown()
    leftovers = [p for p in family if is_present(p)]
    assert not leftovers, describe(leftovers)



def test_killing_a_command_line_cluster_stops_its_workers(procs):
    address = "tcp://127.0.0.1:%d" % free_port_pair()
    env = subprocess_env()
    procs.python(["-m", "scaler.scheduler", address], "scheduler", env=env)
    cluster = procs.python(["-m", "scaler.cluster", address, "-n", "2"], "cluster", env=env)
    with Client(address) as client:
        assert client.map(add, range(4), range(4)) == [0, 2, 4, 6]
        tree = wait_for_tree(cluster.pid, combo_tree_complete(cluster.pid, 2), TIMEOUT,
                             "2 workers with processors under the cluster")
        family = [proc_of(s) for s in tree]
        os.kill(cluster.pid, signal.SIGKILL)
        exit_code_within(cluster, TIMEOUT)
        wait_until(lambda: all(has_exited(p) for p in family), 30,
                   "the killed cluster's workers and processors to exit (lifelines):\n" + describe(family))


def test_command_line_scheduler_with_a_separate_object_storage_server(procs):
    storage_address = "tcp://127.0.0.1:%d" % free_port_pair()
    address = "tcp://127.0.0.1:%d" % free_port_pair()
    env = subprocess_env()
    storage = procs.python(["-m", "scaler.object_storage", storage_address, "-ll", "INFO"], "storage", env=env)
    storage.output.wait_for("listening on", TIMEOUT)  # a client does not wait for object storage to come up
    scheduler = procs.python(["-m", "scaler.scheduler", address, "-osa", storage_address, "-ll", "WARNING"],
                             "scheduler", env=env)
    cluster = procs.python(["-m", "scaler.cluster", address, "-n", "2", "-ll", "WARNING"], "cluster", env=env)
    with Client(address) as client:
        assert client.submit(add, 1, 2).result(timeout=TIMEOUT) == 3
        ref = client.send_object(b"x" * 3000000)
        assert client.submit(len, ref).result(timeout=TIMEOUT) == 3000000
        assert client.submit(len, b"y" * 2000000).result(timeout=TIMEOUT) == 2000000  # big argument
        assert len(client.submit(bytes, 3000000).result(timeout=TIMEOUT)) == 3000000  # big result
        assert client.map(add, range(100), range(100)) == [2 * i for i in range(100)]
    for child in (cluster, scheduler, storage):
        child.popen.send_signal(signal.SIGTERM)
    for child in (cluster, scheduler, storage):
        assert exit_code_within(child, 20) == 0, child.output.text()


# Regression: a failed dial of a separate object storage server used to end the client at
# once; it is now retried until the client's connect deadline, like the scheduler's.


def test_client_waits_for_a_late_object_storage_server(procs):
    import threading

    storage_address = "tcp://127.0.0.1:%d" % free_port_pair()
    address = "tcp://127.0.0.1:%d" % free_port_pair()
    env = subprocess_env()
    scheduler = procs.python(["-m", "scaler.scheduler", address, "-osa", storage_address, "-ll", "DEBUG"],
                             "scheduler", env=env)
    procs.python(["-m", "scaler.cluster", address, "-n", "1", "-ll", "WARNING"], "cluster", env=env)
    outcome = []

    def connect():
        try:
            with Client(address, timeout_seconds=30) as client:
                outcome.append(client.submit(add, 1, 2).result(timeout=TIMEOUT))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    scheduler.output.wait_for(r"client .* connected", TIMEOUT)  # it was told where object storage is
    procs.python(["-m", "scaler.object_storage", storage_address, "-ll", "WARNING"], "storage", env=env)
    thread.join(TIMEOUT)
    assert outcome == [3]
