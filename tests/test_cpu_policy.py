"""The worker agent's scheduling policy (scaler/utility/cpu_policy.py): SCHED_BATCH while
its processor has tasks lined up, SCHED_OTHER otherwise; the processor and user code
always under SCHED_OTHER."""

import os
import subprocess
import sys
import threading
import time

import pytest

from e2e_support import combo_tree_complete, wait_for_tree, wait_until
from scaler import Client
from scaler.utility import cpu_policy

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="Linux scheduling policies only")

TIMEOUT = 60


def in_thread(fn):
    """Run ``fn`` in a thread of its own (a policy is per thread: the test's stays untouched)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: B902 - re-raised in the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_the_agent_yields_only_while_tasks_are_lined_up():
    """Two tasks held or more (the running one and the next): SCHED_BATCH, however short
    the tasks (the pipeline has sent the next ones ahead); fewer: SCHED_OTHER."""
    other, batch = os.SCHED_OTHER, os.SCHED_BATCH

    def run():
        policy = cpu_policy.AgentPolicy()
        assert policy.enabled
        seen = []
        for held in (0, 1, 2, 16, 1, 0, 3, 1):
            policy.holding(held)
            seen.append(os.sched_getscheduler(0))
        return seen

    assert in_thread(run) == [other, other, batch, batch, other, other, batch, other]


def test_a_refused_switch_back_is_tried_again(monkeypatch):
    """Leaving SCHED_BATCH refused once (seccomp, reset-on-fork): the agent must not stay
    under it for good; it asks again at the next change."""
    real = os.sched_setscheduler
    refusals = [1]

    def refuse_once_on_the_way_back(pid, policy, param):
        if policy == os.SCHED_OTHER and refusals:
            refusals.pop()
            raise PermissionError("refused")
        return real(pid, policy, param)

    def run():
        policy = cpu_policy.AgentPolicy()
        policy.holding(5)
        assert os.sched_getscheduler(0) == os.SCHED_BATCH
        monkeypatch.setattr(os, "sched_setscheduler", refuse_once_on_the_way_back)
        policy.holding(0)  # refused
        assert os.sched_getscheduler(0) == os.SCHED_BATCH and policy.enabled
        policy.holding(0)  # asked again
        return os.sched_getscheduler(0), policy.batch

    assert in_thread(run) == (os.SCHED_OTHER, False)


def test_a_policy_set_by_an_operator_while_the_agent_runs_is_kept():
    """chrt -p on a running agent: its choice is kept, not overwritten at the next switch."""
    def run():
        policy = cpu_policy.AgentPolicy()
        assert policy.enabled
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # the operator's, meanwhile
        policy.holding(5)
        policy.holding(0)
        return os.sched_getscheduler(0), policy.enabled

    assert in_thread(run) == (os.SCHED_IDLE, False)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(cpu_policy.ENV, "0")

    def run():
        policy = cpu_policy.AgentPolicy()
        policy.holding(5)
        return policy.enabled, os.sched_getscheduler(0)

    assert in_thread(run) == (False, os.SCHED_OTHER)


def test_a_policy_chosen_by_the_operator_is_kept_by_agent_and_processor():
    def run():
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # as under `chrt --idle`
        policy = cpu_policy.AgentPolicy()
        policy.holding(5)
        cpu_policy.processor_policy()
        return policy.enabled, os.sched_getscheduler(0)

    assert in_thread(run) == (False, os.SCHED_IDLE)


def test_the_processor_leaves_the_batch_policy_it_inherited():
    def run():
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        cpu_policy.processor_policy()
        return os.sched_getscheduler(0)

    assert in_thread(run) == os.SCHED_OTHER


def test_an_unprivileged_process_may_switch_both_ways():
    script = (
        "import os, sys\n"
        "from scaler.utility import cpu_policy\n"  # (first: as nobody, root's Python may be unreadable)
        "if os.getuid() == 0:\n"
        "    os.setgid(65534); os.setuid(65534)\n"
        "assert os.getuid() != 0\n"
        "p = cpu_policy.AgentPolicy(); assert p.enabled\n"
        "p.holding(4)\n"
        "assert os.sched_getscheduler(0) == os.SCHED_BATCH, 'to batch'\n"
        "p.holding(0); assert os.sched_getscheduler(0) == os.SCHED_OTHER, 'back'\n"
        "os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))\n"
        "cpu_policy.processor_policy(); assert os.sched_getscheduler(0) == os.SCHED_OTHER, 'processor'\n"
        "print('ok')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.pop(cpu_policy.ENV, None)
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd="/", stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=TIMEOUT)
    assert out.returncode == 0 and out.stdout.strip().endswith(b"ok"), out.stdout.decode(errors="replace")


# --- a real worker --------------------------------------------------------------------------

def wait_for_file(path, report):
    """Block until ``path`` exists; return the policies of this thread and of a new one."""
    import os as _os
    import threading as _threading
    import time as _time

    deadline = _time.monotonic() + 60
    while not _os.path.exists(path):
        if _time.monotonic() > deadline:
            raise TimeoutError(path)
        _time.sleep(0.01)
    seen = []
    thread = _threading.Thread(target=lambda: seen.append(_os.sched_getscheduler(0)))
    thread.start()
    thread.join(10)
    return report, _os.sched_getscheduler(0), seen[0]


def worker_pids(combo):
    cluster_pid = combo._worker_manager_process.pid
    tree = wait_for_tree(cluster_pid, combo_tree_complete(cluster_pid, 1), TIMEOUT, "one worker with its processor")
    agent = next(s.pid for s in tree if s.ppid == cluster_pid)
    processor = next(s.pid for s in tree if s.ppid == agent)
    return agent, processor


def processor_of(agent):
    """The live processor under ``agent`` (its one framework child), or None."""
    from e2e_support import framework_children
    kids = framework_children(agent)
    return kids[0].pid if len(kids) == 1 else None


@pytest.mark.parametrize("enabled", [True, False], ids=["default", "switched-off"])
def test_a_worker_agent_yields_to_its_busy_processor_and_user_code_runs_normally(make_combo, tmp_path,
                                                                                  monkeypatch, enabled):
    if not enabled:
        monkeypatch.setenv(cpu_policy.ENV, "0")  # read by the agent the combo starts
    combo = make_combo(n_workers=1)
    agent, processor = worker_pids(combo)
    release = str(tmp_path / "release")
    with Client(combo.get_address()) as client:
        assert client.submit(os.getpid).result(timeout=TIMEOUT) == processor
        client.map(time.sleep, [0.01] * 12)  # a stream: the agent yields while it lasts...
        assert os.sched_getscheduler(agent) == os.SCHED_OTHER  # ...and now it is idle: a wake-up preempts
        futures = [client.submit(wait_for_file, release, k) for k in range(4)]  # one runs, three wait
        if enabled:
            wait_until(lambda: os.sched_getscheduler(agent) == os.SCHED_BATCH, TIMEOUT,
                       "the agent under SCHED_BATCH with four tasks held")
        else:
            time.sleep(0.5)  # the tasks have reached it (nothing to wait on: it must *not* switch)
            assert os.sched_getscheduler(agent) == os.SCHED_OTHER
        assert os.sched_getscheduler(processor) == os.SCHED_OTHER
        # Cancelling the running task restarts the processor: started while the agent is
        # under SCHED_BATCH, the new one must leave it before running anything.
        assert futures[0].cancel()
        replacement = wait_until(lambda: (processor_of(agent) or processor) != processor and processor_of(agent),
                                 TIMEOUT, "a new processor")
        assert os.sched_getscheduler(agent) == (os.SCHED_BATCH if enabled else os.SCHED_OTHER)
        open(release, "w").close()
        results = [f.result(timeout=TIMEOUT) for f in futures[1:]]
        assert results == [(k, os.SCHED_OTHER, os.SCHED_OTHER) for k in range(1, 4)]
        assert client.submit(os.getpid).result(timeout=TIMEOUT) == replacement
        assert os.sched_getscheduler(replacement) == os.SCHED_OTHER
        wait_until(lambda: os.sched_getscheduler(agent) == os.SCHED_OTHER, TIMEOUT,
                   "the agent back under SCHED_OTHER once its tasks are done")


def test_the_agent_leaves_the_batch_policy_when_its_tasks_are_cancelled(make_combo, tmp_path):
    """No result comes for a cancelled task: the cancels themselves end the batch policy,
    not the next heartbeat (30 s here, longer than the wait below)."""
    combo = make_combo(n_workers=1, heartbeat_interval_seconds=30)
    agent, _ = worker_pids(combo)
    release = str(tmp_path / "release")
    with Client(combo.get_address()) as client:
        futures = [client.submit(wait_for_file, release, k) for k in range(4)]
        wait_until(lambda: os.sched_getscheduler(agent) == os.SCHED_BATCH, TIMEOUT,
                   "the agent under SCHED_BATCH with four tasks held")
        for future in reversed(futures):  # the queued ones first, then the running one
            assert future.cancel()
        wait_until(lambda: os.sched_getscheduler(agent) == os.SCHED_OTHER, 10,
                   "the agent back under SCHED_OTHER once its tasks are cancelled")
        open(release, "w").close()
        assert client.submit(os.getpid).result(timeout=TIMEOUT) > 0


def test_a_map_of_no_op_tasks_puts_the_agent_under_sched_batch_while_it_runs(make_combo):
    """However short the tasks, two or more held make the agent yield to its processor: a
    no-op map is where that pays most. Sampled from outside while maps run (a map of a few
    thousand tasks keeps the agent holding many for most of its run); back to SCHED_OTHER
    once it is done."""
    combo = make_combo(n_workers=1)
    agent, _ = worker_pids(combo)
    seen = set()
    running = threading.Event()

    def sample():
        while running.is_set():
            try:
                seen.add(os.sched_getscheduler(agent))
            except OSError:
                return

    with Client(combo.get_address()) as client:
        client.map(int, range(10))  # the function is on the worker
        for _ in range(20):
            running.set()
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                assert client.map(int, range(5000)) == list(range(5000))
            finally:
                running.clear()
                sampler.join(TIMEOUT)
            if os.SCHED_BATCH in seen:
                break
        assert os.SCHED_BATCH in seen, seen
        wait_until(lambda: os.sched_getscheduler(agent) == os.SCHED_OTHER, TIMEOUT,
                   "the agent back under SCHED_OTHER once the map is done")
