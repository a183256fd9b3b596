"""The scheduler's scheduling policy (scaler/utility/cpu_policy.py): SCHED_BATCH while every
worker's processor has its next task at hand, SCHED_OTHER otherwise; user code always under
SCHED_OTHER."""

import os
import subprocess
import sys
import threading
import time

import pytest

from e2e_support import wait_until
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


def test_the_policy_follows_what_it_is_told_in_this_thread_only():
    other, batch = os.SCHED_OTHER, os.SCHED_BATCH

    def run():
        policy = cpu_policy.BatchPolicy()
        assert policy.enabled
        seen = []
        for wanted in (False, True, True, False, True, False):
            policy.set(wanted)
            seen.append(os.sched_getscheduler(0))
        return seen

    assert in_thread(run) == [other, batch, batch, other, batch, other]
    assert os.sched_getscheduler(0) == other


def test_a_refused_switch_back_is_tried_again(monkeypatch):
    """Leaving SCHED_BATCH refused once (seccomp, reset-on-fork): the scheduler must not stay
    under it for good; it asks again at the next change."""
    real = os.sched_setscheduler
    refusals = [1]

    def refuse_once_on_the_way_back(pid, policy, param):
        if policy == os.SCHED_OTHER and refusals:
            refusals.pop()
            raise PermissionError("refused")
        return real(pid, policy, param)

    def run():
        policy = cpu_policy.BatchPolicy()
        policy.set(True)
        assert os.sched_getscheduler(0) == os.SCHED_BATCH
        monkeypatch.setattr(os, "sched_setscheduler", refuse_once_on_the_way_back)
        policy.set(False)  # refused
        assert os.sched_getscheduler(0) == os.SCHED_BATCH and policy.enabled
        policy.set(False)  # asked again
        return os.sched_getscheduler(0), policy.batch

    assert in_thread(run) == (os.SCHED_OTHER, False)


def test_a_policy_set_by_an_operator_while_the_scheduler_runs_is_kept():
    """chrt -p on a running scheduler: its choice is kept, not overwritten at the next switch."""
    def run():
        policy = cpu_policy.BatchPolicy()
        assert policy.enabled
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # the operator's, meanwhile
        policy.set(True)
        policy.set(False)
        return os.sched_getscheduler(0), policy.enabled

    assert in_thread(run) == (os.SCHED_IDLE, False)


@pytest.mark.parametrize("name", [cpu_policy.ENV, cpu_policy.OLD_ENV])
def test_switched_off_by_the_environment(monkeypatch, name):
    monkeypatch.setenv(name, "0")

    def run():
        policy = cpu_policy.BatchPolicy()
        policy.set(True)
        return policy.enabled, os.sched_getscheduler(0)

    assert in_thread(run) == (False, os.SCHED_OTHER)


def test_a_policy_chosen_by_the_operator_is_kept():
    def run():
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # as under `chrt --idle`
        policy = cpu_policy.BatchPolicy()
        policy.set(True)
        return policy.enabled, os.sched_getscheduler(0)

    assert in_thread(run) == (False, os.SCHED_IDLE)


def test_an_unprivileged_process_may_switch_both_ways():
    script = (
        "import os, sys\n"
        "from scaler.utility import cpu_policy\n"  # (first: as nobody, root's Python may be unreadable)
        "if os.getuid() == 0:\n"
        "    os.setgid(65534); os.setuid(65534)\n"
        "assert os.getuid() != 0\n"
        "p = cpu_policy.BatchPolicy(); assert p.enabled\n"
        "p.set(True)\n"
        "assert os.sched_getscheduler(0) == os.SCHED_BATCH, 'to batch'\n"
        "p.set(False); assert os.sched_getscheduler(0) == os.SCHED_OTHER, 'back'\n"
        "print('ok')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.pop(cpu_policy.ENV, None)
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd="/", stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=TIMEOUT)
    assert out.returncode == 0 and out.stdout.strip().endswith(b"ok"), out.stdout.decode(errors="replace")


# --- a real cluster --------------------------------------------------------------------------

def wait_for_file(path):
    """Block until ``path`` exists; return this thread's policy (user code's)."""
    import os as _os
    import time as _time

    deadline = _time.monotonic() + 60
    while not _os.path.exists(path):
        if _time.monotonic() > deadline:
            raise TimeoutError(path)
        _time.sleep(0.01)
    return _os.sched_getscheduler(0)


@pytest.mark.parametrize("enabled", [True, False], ids=["default", "switched-off"])
def test_the_scheduler_yields_while_every_worker_has_its_next_task(make_combo, tmp_path, monkeypatch, enabled):
    if not enabled:
        monkeypatch.setenv(cpu_policy.ENV, "0")  # read by the scheduler the combo starts
    combo = make_combo(n_workers=2)
    scheduler = combo._scheduler.pid
    release = str(tmp_path / "release")
    with Client(combo.get_address()) as client:
        client.map(time.sleep, [0.01] * 12)
        assert os.sched_getscheduler(scheduler) == os.SCHED_OTHER  # idle: a wake-up preempts
        first = [client.submit(wait_for_file, release) for _ in range(2)]  # one per worker...
        time.sleep(0.5)
        assert os.sched_getscheduler(scheduler) == os.SCHED_OTHER, "a worker without its next task"
        more = [client.submit(wait_for_file, release) for _ in range(4)]  # ...now each holds its next
        if enabled:
            wait_until(lambda: os.sched_getscheduler(scheduler) == os.SCHED_BATCH, TIMEOUT,
                       "the scheduler under SCHED_BATCH while both workers hold two tasks or more")
        else:
            time.sleep(0.5)  # the tasks have reached the workers' pipelines: it must *not* switch
            assert os.sched_getscheduler(scheduler) == os.SCHED_OTHER
        open(release, "w").close()
        assert [f.result(timeout=TIMEOUT) for f in first + more] == [os.SCHED_OTHER] * 6, "user code runs normally"
        wait_until(lambda: os.sched_getscheduler(scheduler) == os.SCHED_OTHER, TIMEOUT,
                   "the scheduler back under SCHED_OTHER once the tasks are done")


def test_cancelled_tasks_end_the_batch_policy(make_combo, tmp_path):
    combo = make_combo(n_workers=1)
    scheduler = combo._scheduler.pid
    release = str(tmp_path / "release")
    with Client(combo.get_address()) as client:
        futures = [client.submit(wait_for_file, release) for _ in range(4)]
        wait_until(lambda: os.sched_getscheduler(scheduler) == os.SCHED_BATCH, TIMEOUT,
                   "the scheduler under SCHED_BATCH with four tasks held")
        for future in reversed(futures):  # the queued ones first, then the running one
            assert future.cancel()
        wait_until(lambda: os.sched_getscheduler(scheduler) == os.SCHED_OTHER, 10,
                   "the scheduler back under SCHED_OTHER once the tasks are cancelled")
        open(release, "w").close()
        assert client.submit(os.getpid).result(timeout=TIMEOUT) > 0
