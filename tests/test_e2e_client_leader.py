"""A thread waiting in ``result()`` reads the scheduler connection itself (scaler/client/leader.py).

Each test checks one way the borrowed socket must be given back, or one way the waiting
thread must be woken that does not come through that socket; a failure here shows up as a
hang (bounded by the timeouts below) or a client that no longer gets results.
"""

import os
import signal
import threading
import time
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeoutError

import pytest

from scaler.client import leader as leader_module
from scaler.utility.exceptions import DisconnectedError

pytestmark = pytest.mark.skipif(not leader_module._ENABLED, reason="no select.poll here, or SCALER_CLIENT_LEAD=0")


def noop(x):
    return x


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


def big_result(n):
    return b"x" * n


def still_works(client):
    assert client.submit(noop, 7).result(timeout=30) == 7
    assert client.map(noop, range(50)) == list(range(50))


@pytest.fixture(autouse=True)
def _default_sigint():
    """Leading in the main thread needs Python's own SIGINT handler (a test elsewhere that
    changed it must not turn these tests into tests of the ordinary wait)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def long_slice(monkeypatch):
    """Polls that never end on their own within a test: a missed wake-up then shows as a
    hang (caught by the test's own timeouts), not as a one-second delay."""
    monkeypatch.setattr(leader_module, "LEAD_SLICE_SECONDS", 120.0)


def test_the_waiting_thread_reads_its_result(client):
    leader = client._agent.leader
    before = leader.results_led
    threads = []
    future = client.submit(sleep_then, 0.2, "x")
    future.add_done_callback(lambda f: threads.append(threading.get_ident()))
    assert future.result(timeout=30) == "x"
    assert threads == [threading.get_ident()]  # finished here, not on the I/O thread
    assert leader.results_led == before + 1
    loop, sock = client._agent.loop, client._agent.scheduler.sock
    assert loop.lent_events(sock) is None and loop.selector.get_key(sock) is not None  # given back
    still_works(client)


def test_exception_waits_the_same_way(client):
    leader = client._agent.leader
    before = leader.results_led
    future = client.submit(sleep_then, 0.1, None)
    assert future.exception(timeout=30) is None
    assert leader.results_led == before + 1


def test_timeout_while_leading_gives_the_socket_back(client, long_slice):
    slow = client.submit(sleep_then, 30, "late")
    started = time.monotonic()
    with pytest.raises(FutureTimeoutError):
        slow.result(timeout=0.5)
    assert time.monotonic() - started < 20
    assert client._agent.loop.lent_events(client._agent.scheduler.sock) is None
    still_works(client)  # through the I/O thread and through leading again
    slow.cancel()


def test_cancel_from_another_thread_wakes_the_leader(client, long_slice):
    slow = client.submit(sleep_then, 60, "never")
    threading.Timer(0.5, slow.cancel).start()
    started = time.monotonic()
    with pytest.raises(CancelledError):
        slow.result(timeout=60)
    assert time.monotonic() - started < 30  # woken by the cancel, not by the 120 s slice
    still_works(client)


def test_a_result_fetched_from_storage_wakes_the_leader(shared_combo, long_slice):
    """A big result comes back through object storage: the I/O thread, not the leader,
    finishes the future, and must wake it (nothing else comes on the scheduler socket: the
    heartbeat's echo would otherwise end the leader's poll within seconds)."""
    from scaler import Client

    with Client(shared_combo.get_address(), heartbeat_interval_seconds=300, timeout_seconds=600) as client:
        n = 3 * 1024 * 1024
        future = client.submit(big_result, n)
        started = time.monotonic()
        assert future.result(timeout=60) == b"x" * n
        assert time.monotonic() - started < 30  # woken by the I/O thread, not by the end of its timeout
        assert client._agent.leader.results_led == 1
        still_works(client)


def test_many_threads_waiting_at_once(client):
    errors = []

    def work(k):
        try:
            for i in range(40):
                assert client.submit(noop, (k, i)).result(timeout=60) == (k, i)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert client._agent.leader.results_led > 0
    still_works(client)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_ctrl_c_while_leading(client, long_slice):
    """SIGINT while the main thread polls: KeyboardInterrupt at once, the socket given
    back, the handler restored, and the task's result still delivered afterwards."""
    slow = client.submit(sleep_then, 1.5, "kept")
    main = threading.main_thread().ident
    threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        slow.result(timeout=60)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert client._agent.loop.lent_events(client._agent.scheduler.sock) is None
    assert slow.result(timeout=60) == "kept"
    still_works(client)


def wait_for_file(path, value):
    while not os.path.exists(path):
        time.sleep(0.01)
    return value


class _Interrupted(Exception):
    """What the user's own SIGINT handler raises in these tests."""


def _raising_handler(calls):
    def handler(signum, frame):
        calls.append(signum)
        raise _Interrupted("SIGINT")
    return handler


@pytest.mark.skipif(not hasattr(signal, "raise_signal"), reason="needs signal.raise_signal")
@pytest.mark.parametrize("own_handler", [False, True], ids=["python-handler", "users-handler"])
def test_ctrl_c_while_results_are_handled_waits_for_them(client, tmp_path, own_handler):
    """SIGINT landing while the leader handles a batch of results (here: raised by a
    done-callback, which runs inside that handling) is held back until the batch is handled
    and the socket given back, then its handler runs (Python's raises KeyboardInterrupt; a
    handler of the user's own raises what it raises): no result is dropped half-delivered.

    The tasks wait for a gate, then all end within milliseconds: their results come back
    several to a frame, read by the main thread, which leads on each in turn (not only on
    the last one submitted: balancing may run the newest tasks first on an idle worker)."""
    calls = []
    handler = _raising_handler(calls) if own_handler else signal.default_int_handler
    expected = _Interrupted if own_handler else KeyboardInterrupt
    signal.signal(signal.SIGINT, handler)
    gate = str(tmp_path / "gate")
    futures = [client.submit(wait_for_file, gate, i) for i in range(400)]
    raised_in = []
    ran_in = []  # (for the message of a failure: which threads handled these results)
    first_wait = [True]  # one SIGINT, and only inside the wait below (not in the checks after it)

    def interrupt(future):
        ran_in.append(threading.current_thread().name)
        if threading.current_thread() is threading.main_thread() and first_wait[0] and not raised_in:
            raised_in.append("main")
            signal.raise_signal(signal.SIGINT)

    for future in futures[100:300:20]:
        future.add_done_callback(interrupt)
    threading.Timer(0.5, lambda: open(gate, "w").close()).start()
    interrupted = False
    try:
        for future in futures:
            future.result(timeout=60)
    except expected:
        interrupted = True
    finally:
        first_wait[0] = False
    assert signal.getsignal(signal.SIGINT) is handler
    assert [f.result(timeout=60) for f in futures] == list(range(400))  # none lost in a cut batch
    assert interrupted == bool(raised_in)
    assert raised_in, "no result was handled by the main thread as leader: %s, led %d" % (
        ran_in, client._agent.leader.results_led)
    assert calls == ([signal.SIGINT] if own_handler else [])
    still_works(client)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_a_handler_of_the_users_own_runs_at_once_while_the_main_thread_polls(client, long_slice):
    """The main thread leads with a SIGINT handler of the user's own too: a SIGINT while it
    polls runs that handler at once (here it raises), the socket is given back, the
    handler is left in place, and the result is still delivered afterwards."""
    leader = client._agent.leader
    calls = []
    handler = _raising_handler(calls)
    signal.signal(signal.SIGINT, handler)
    slow = client.submit(sleep_then, 1.5, "kept")
    main = threading.main_thread().ident
    threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    with pytest.raises(_Interrupted):
        slow.result(timeout=60)
    assert calls == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is handler
    assert client._agent.loop.lent_events(client._agent.scheduler.sock) is None
    before = leader.results_led
    assert slow.result(timeout=60) == "kept"
    assert leader.results_led > before
    still_works(client)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_a_handler_of_the_users_own_that_returns_lets_the_wait_go_on(client, long_slice):
    leader = client._agent.leader
    calls = []
    signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    before = leader.results_led
    slow = client.submit(sleep_then, 1.0, "done")
    main = threading.main_thread().ident
    threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    assert slow.result(timeout=60) == "done"
    assert calls == [signal.SIGINT]
    assert leader.results_led > before


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_a_handler_that_installs_another_keeps_it(client, long_slice):
    """A common Ctrl-C handler asks to stop gracefully and arms Python's own for a second
    Ctrl-C: run while the main thread leads, what it installed stays in place."""
    calls = []

    def graceful(signum, frame):
        calls.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, graceful)
    slow = client.submit(sleep_then, 1.0, "done")
    main = threading.main_thread().ident
    threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    assert slow.result(timeout=60) == "done"
    assert calls == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("disposition", ["SIG_IGN", "SIG_DFL"])
def test_the_main_thread_leads_when_sigint_runs_no_python(client, disposition):
    """SIGINT ignored (a script started in the background with ``&``, or under nohup) or
    left to its default action: nothing can interrupt a frame, so the main thread leads,
    and the disposition is left as it was. (It used to wait the ordinary way: a round trip
    about 40 % slower, which is how the benchmark, started in the background, measured.)"""
    leader = client._agent.leader
    value = getattr(signal, disposition)
    signal.signal(signal.SIGINT, value)
    before = leader.results_led
    assert client.submit(sleep_then, 0.1, 1).result(timeout=30) == 1
    assert leader.results_led > before
    assert signal.getsignal(signal.SIGINT) == value


def test_disconnect_from_another_thread_while_leading(shared_combo, long_slice):
    from scaler import Client

    client = Client(shared_combo.get_address())
    slow = client.submit(sleep_then, 60, "never")
    threading.Timer(0.5, client.disconnect).start()
    started = time.monotonic()
    with pytest.raises(BaseException) as raised:
        slow.result(timeout=60)
    assert isinstance(raised.value, (CancelledError, DisconnectedError)) or "stopped" in str(raised.value)
    assert time.monotonic() - started < 30


def test_scheduler_lost_while_leading(make_combo, long_slice):
    from scaler import Client

    combo = make_combo(n_workers=1)
    with Client(combo.get_address(), timeout_seconds=30) as client:
        assert client.submit(noop, 1).result(timeout=30) == 1
        slow = client.submit(sleep_then, 60, "never")
        threading.Timer(0.5, lambda: os.kill(combo._scheduler.pid, signal.SIGKILL)).start()
        started = time.monotonic()
        with pytest.raises(DisconnectedError):
            slow.result(timeout=60)
        assert time.monotonic() - started < 30  # the leader read the end of the connection


def test_a_stop_while_a_waiter_holds_the_lock_still_closes_the_leader_pipe(shared_combo, monkeypatch):
    """The client's stop closes the leader's wake pipe unless a waiting thread holds the lock;
    that thread then closes it on its way out, whether it was leading or not yet (here: the
    stop lands right after it took the lock)."""
    from scaler import Client

    with Client(shared_combo.get_address()) as client:
        leader = client._agent.leader
        assert client.submit(noop, 1).result(timeout=30) == 1  # a lead made the pipe
        pipe = (leader._wake_r, leader._wake_w)
        assert leader._poller is not None
        # A thread that took the lock while another leads (and polls the pipe, having let the
        # lock go for its poll) must leave the pipe to that one.
        monkeypatch.setattr(leader_module.Leader, "_lead",
                            lambda self, *args: (setattr(self, "_leading", True), self.close()))
        assert leader.wait(client.submit(noop, 2), 30) is not None
        assert leader._poller is not None
        os.fstat(pipe[0])
        leader._leading, leader._closed = False, False
        monkeypatch.setattr(leader_module.Leader, "_lead", lambda self, *args: self.close())
        assert client.submit(noop, 3).result(timeout=30) == 3  # (then waited for the ordinary way)
        assert leader._poller is None
        for fd in pipe:
            with pytest.raises(OSError):
                os.fstat(fd)


def test_hold_sigint_holds_ctrl_c_back_until_released():
    """A TLS write from the main thread (submit_now) holds SIGINT back, as the leader does
    while it handles a frame: Python's ssl module would run the handler right after the
    write, and the KeyboardInterrupt would have the record written again."""
    held = leader_module.hold_sigint()
    try:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        for _ in range(10000):  # places where a pending handler would run
            time.sleep(0)
    except KeyboardInterrupt:
        held.release()
        pytest.fail("SIGINT was not held back")
    with pytest.raises(KeyboardInterrupt):
        held.release()  # ... but runs once released
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    leader_module.hold_sigint().release()  # nothing held back: nothing raised
    # no Python handler, or not the main thread: nothing to hold back
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert leader_module.hold_sigint() is leader_module._NOT_HELD
    finally:
        signal.signal(signal.SIGINT, previous)
    out = []
    thread = threading.Thread(target=lambda: out.append(leader_module.hold_sigint()))
    thread.start()
    thread.join(30)
    assert out == [leader_module._NOT_HELD]
