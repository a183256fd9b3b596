"""``utility.process.fork_child``: a child made by forking, which must look like one started
as a new interpreter (signals, stdin, lifelines) and be waited for like a ``Popen``."""

import _thread
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from scaler.utility import process as proc_util

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forking children is Linux-only")

TIMEOUT = 10.0


def _status(child):
    """The child's exit status once it ends by itself (``stop`` would signal it first)."""
    try:
        return child.popen.wait(TIMEOUT)
    finally:
        child.stop(TIMEOUT)


def _wait_for_lifeline(lifeline_fd):
    while os.read(lifeline_fd, 1):
        pass
    return 0


def test_the_exit_status_is_what_run_returns_or_raises():
    assert _status(proc_util.fork_child("t", lambda _fd: 5)) == 5

    def exits(_fd):
        raise SystemExit(3)

    def fails(_fd):
        raise RuntimeError("in the child")

    assert _status(proc_util.fork_child("t", exits)) == 3
    assert _status(proc_util.fork_child("t", fails)) == 1


def test_popen_face_poll_wait_timeout_and_signals():
    child = proc_util.fork_child("t", _wait_for_lifeline)
    try:
        assert child.poll() is None and child.is_alive()
        with pytest.raises(subprocess.TimeoutExpired):
            child.popen.wait(0.05)
        child.kill()
        assert child.popen.wait(TIMEOUT) == -signal.SIGKILL
        assert child.exitcode == -signal.SIGKILL and not child.is_alive()
    finally:
        child.stop(TIMEOUT)


def test_the_child_ends_when_its_lifeline_closes():
    child = proc_util.fork_child("t", _wait_for_lifeline)
    try:
        child.close_lifeline()
        assert child.popen.wait(TIMEOUT) == 0
    finally:
        child.stop(TIMEOUT)


def test_the_child_never_returns_into_the_callers_code():
    """Whatever ``run`` returns or raises, the child exits (a bad status included)."""
    assert _status(proc_util.fork_child("t", lambda _fd: None)) == 1
    assert _status(proc_util.fork_child("t", lambda _fd: 256 + 7)) == 7

    def exits_with_text(_fd):
        raise SystemExit("a message")

    assert _status(proc_util.fork_child("t", exits_with_text)) == 1


def test_the_child_starts_with_no_logging_set_up(tmp_path):
    """What a ``dictConfig`` in the parent leaves (loggers it does not name disabled, others
    with handlers, levels, no propagation; here set by hand, so that the test runner's
    own loggers stay as they are) does not reach the child, which sets up its own."""
    import logging
    report = tmp_path / "report"
    quiet = logging.getLogger("scaler.test_fork_child.quiet")
    named = logging.getLogger("scaler.test_fork_child.named")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    quiet.disabled = True
    named.addHandler(logging.StreamHandler())
    named.setLevel(logging.DEBUG)
    named.propagate = False
    root.addHandler(logging.StreamHandler())
    try:
        def run(_fd):
            report.write_text(repr((quiet.disabled, named.disabled, len(named.handlers), named.level,
                                    named.propagate,
                                    [h for h in root.handlers if not isinstance(h, logging.NullHandler)])))
            return 0

        child = proc_util.fork_child("t", run)
    finally:
        for handler in named.handlers[:]:
            named.removeHandler(handler)
        named.propagate, named.level, quiet.disabled = True, logging.NOTSET, False
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert _status(child) == 0
    assert report.read_text() == repr((False, False, 0, logging.NOTSET, True, []))
def test_the_child_starts_with_default_signal_handlers_stdin_from_dev_null_and_its_name(tmp_path):
    report = tmp_path / "report"
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    for signum in previous:
        signal.signal(signum, lambda *_: None)

    def run(_fd):
        handlers = [signal.getsignal(signal.SIGINT) is signal.default_int_handler,
                    signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
                    signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL]
        stdin = os.fstat(0)
        null = os.stat(os.devnull)
        with open("/proc/self/comm") as f:
            name = f.read().strip()
        report.write_text(repr((handlers, (stdin.st_dev, stdin.st_ino) == (null.st_dev, null.st_ino), name)))
        return 0

    try:
        child = proc_util.fork_child("t", run, comm="scaler-test-name-too-long")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert _status(child) == 0
    assert report.read_text() == repr(([True, True, True], True, "scaler-test-nam"))


def test_a_forked_child_holds_no_siblings_lifeline():
    """Else a sibling would not see its parent die while this one lives."""
    first = proc_util.fork_child("first", _wait_for_lifeline)
    try:
        fd = first.lifeline_fd

        def check(_fd):
            try:
                os.fstat(fd)
            except OSError:
                return 0  # closed here, as it must be
            return 1

        assert _status(proc_util.fork_child("second", check)) == 0
        first.close_lifeline()  # (the test's own copy: the first child now reads end of file)
        assert first.popen.wait(TIMEOUT) == 0
    finally:
        first.stop(TIMEOUT)


def test_what_the_parent_buffered_on_stdout_is_not_written_twice(tmp_path):
    script = tmp_path / "buffered.py"
    script.write_text("import sys\n"
                      "from scaler.utility import process as proc_util\n"
                      "sys.stdout.write('before the fork\\n')  # buffered: stdout is a file\n"
                      "child = proc_util.fork_child('t', lambda _fd: 0)\n"
                      "sys.exit(child.popen.wait(10))\n")
    out = tmp_path / "out"
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)  # (set, stdout would buffer nothing)
    with open(str(out), "w") as f:
        done = subprocess.run([sys.executable, str(script)], stdout=f, stderr=subprocess.PIPE, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "before the fork\n"


def test_can_fork_only_in_a_component_with_one_thread_and_not_when_turned_off(monkeypatch):
    monkeypatch.delenv(proc_util.FORK_ENV, raising=False)
    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
        pytest.skip("the test runner has other threads")
    assert not proc_util.can_fork()  # a user's program (here the test runner) is never forked
    monkeypatch.setattr(proc_util, "_COMPONENT_PROCESS", True)  # as run_main sets it
    assert proc_util.can_fork()
    for off in ("0", "false", "No", "off"):
        monkeypatch.setenv(proc_util.FORK_ENV, off)
        assert not proc_util.can_fork()
    monkeypatch.delenv(proc_util.FORK_ENV)

    lock = _thread.allocate_lock()  # a thread the threading module does not know (as a C extension's)
    lock.acquire()
    done = _thread.allocate_lock()
    done.acquire()
    _thread.start_new_thread(lambda: (lock.acquire(), done.release()), ())
    try:
        assert not proc_util.can_fork()
    finally:
        lock.release()
        assert done.acquire(timeout=TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while len(os.listdir("/proc/self/task")) != 1 and time.monotonic() < deadline:
        time.sleep(0.01)

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, args=(TIMEOUT,))
    thread.start()
    try:
        assert not proc_util.can_fork()
    finally:
        stop.set()
        thread.join(TIMEOUT)
    deadline = time.monotonic() + TIMEOUT  # (a joined thread may linger in /proc a moment)
    while not proc_util.can_fork() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc_util.can_fork()
