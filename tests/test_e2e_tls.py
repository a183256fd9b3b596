"""End to end over ``tls://``: real processes, certificates made at test time, 127.0.0.1 only.

- a combo on tls:// runs tasks, a result bigger than 64 KiB, send_object, a map; the monitor
  is TLS too; the shared key still authenticates on top;
- the command-line layout (object storage server, scheduler, cluster) on tls://;
- a client that cannot verify the server's certificate fails at once with a certificate
  error; a plain tcp:// client on a TLS port and a tls:// client on a plain port fail fast
  with an error that names the problem.
"""

import os
import shutil
import socket
import sys
import time

import pytest

from e2e_support import exit_code_within, free_port_pair, subprocess_env
from scaler import Client, SchedulerClusterCombo
from scaler.config.common.security import SecurityConfig
from scaler.utility.exceptions import AuthenticationError, TLSError
from tls_support import NEEDS_OPENSSL, make_pki

pytestmark = [NEEDS_OPENSSL, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="e2e tests need Linux")]

TIMEOUT = 60
FAST = 10  # seconds within which a refused connection must be reported
KEY = "tls-and-a-key"


def add(a, b):
    return a + b


def blob(n):
    return os.urandom(16) + b"x" * (n - 16)


def length(data):
    return len(data)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def _no_ambient_trust(monkeypatch):
    """The system store must not happen to trust the test CA, nor the test the machine's."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "SCALER_TLS_CA"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tls_combo(pki):
    combo = SchedulerClusterCombo(n_workers=2, security_config=SecurityConfig(tls_cert=pki.cert, tls_key=pki.key,
                                                                              tls_ca=pki.ca),
                                  auth_key=KEY, logging_level="WARNING")
    try:
        yield combo
    finally:
        combo.shutdown()


def test_combo_runs_tasks_big_results_and_objects_over_tls(tls_combo, pki):
    address = tls_combo.get_address()
    assert address.startswith("tls://127.0.0.1:")
    assert tls_combo.object_storage_address.startswith("tls://")
    assert tls_combo.monitor_address.startswith("tls://")
    with Client(address, auth_key=KEY, tls_ca=pki.ca, timeout_seconds=TIMEOUT) as client:
        assert client.submit(add, 1, 2).result(timeout=TIMEOUT) == 3
        big = client.submit(blob, 3 * 1024 * 1024 + 7).result(timeout=TIMEOUT)  # well over 64 KiB, via storage
        assert len(big) == 3 * 1024 * 1024 + 7 and big.endswith(b"x" * 1000)
        assert len(client.submit(blob, 100 * 1024).result(timeout=TIMEOUT)) == 100 * 1024
        ref = client.send_object(b"y" * (5 * 1024 * 1024))
        assert client.submit(length, ref).result(timeout=TIMEOUT) == 5 * 1024 * 1024
        assert client.map(add, range(500), range(500)) == [2 * i for i in range(500)]
        # Many single submits in a row, from two threads, each also reading its own results
        # (leader.py): over TLS the caller's-thread write (submit_now) takes the loop's lock,
        # under which alone the SSL object is used, or leaves the submit to the I/O thread.
        import threading
        before = client._agent.direct_submits
        for i in range(20):  # (one finds the I/O thread busy, say with a heartbeat: it writes that one)
            assert client.submit(add, 2, i).result(timeout=TIMEOUT) == 2 + i
        assert client._agent.direct_submits > before  # written by this thread
        errors = []

        def submits(base):
            try:
                for i in range(200):
                    assert client.submit(add, base, i).result(timeout=TIMEOUT) == base + i
            except BaseException as exc:  # noqa: B902 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=submits, args=(base,)) for base in (0, 10000)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert not errors and not any(thread.is_alive() for thread in threads), errors


def slow_blob(seconds, n):
    time.sleep(seconds)
    return blob(n)


def test_the_waiting_thread_reads_its_result_over_tls(tls_combo, pki, monkeypatch):
    """The leader (client/leader.py) over TLS: the thread in result() reads the connection
    itself, and reads what the SSL object has already decrypted before it polls again
    (poll() cannot see it). Reads of 1 000 bytes with a budget of one read leave most of
    every record decrypted in the SSL object; the client's I/O thread, which would pick it
    up on a timer, sleeps for its 60 s heartbeat: a leader that polled past those bytes
    would wait past the test's 20 s timeout."""
    import signal
    import threading

    from scaler.client import leader as leader_module
    from scaler.io import connection as connection_module
    if not leader_module._ENABLED:
        pytest.skip("no select.poll here, or SCALER_CLIENT_LEAD=0")
    monkeypatch.setattr(leader_module, "LEAD_SLICE_SECONDS", 120.0)
    monkeypatch.setattr(connection_module, "_TLS_READ_CHUNK", 1000)
    monkeypatch.setattr(connection_module, "_READ_BUDGET", 1)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with Client(tls_combo.get_address(), auth_key=KEY, tls_ca=pki.ca, timeout_seconds=TIMEOUT,
                    heartbeat_interval_seconds=60) as client:
            assert client._agent.scheduler.tls
            leader = client._agent.leader
            for size in (10 * 1024, 60 * 1024):  # one TLS record; four
                before = leader.results_led
                threads = []
                future = client.submit(slow_blob, 0.3, size)  # the leader leads before it ends
                future.add_done_callback(lambda f: threads.append(threading.get_ident()))
                assert len(future.result(timeout=20)) == size
                assert threads == [threading.get_ident()]  # finished here, not on the I/O thread
                assert leader.results_led == before + 1
            futures = [client.submit(blob, 60 * 1024) for _ in range(30)]  # results queue up behind each other
            assert [len(f.result(timeout=20)) for f in futures] == [60 * 1024] * 30
            assert client.submit(add, 1, 2).result(timeout=20) == 3
    finally:
        signal.signal(signal.SIGINT, previous)


def nested_sum(n):
    from scaler import Client

    with Client() as inner:  # joins the worker's scheduler, with its key and its CA (SCALER_TLS_CA)
        return sum(inner.map(add, range(n), range(n)))


def test_a_task_s_own_client_joins_over_tls(tls_combo, pki):
    with Client(tls_combo.get_address(), auth_key=KEY, tls_ca=pki.ca) as client:
        assert client.submit(nested_sum, 10).result(timeout=TIMEOUT) == 90


def talk_while_waiting_for_children(lines):
    """A thread of the task prints (its output goes out on the processor's TLS connection)
    while the task waits for sub-tasks (the processor reads that connection meanwhile)."""
    import threading
    from scaler import Client

    def talk():
        for i in range(lines):
            print("line %d" % i)

    talker = threading.Thread(target=talk)
    talker.start()
    with Client() as inner:
        total = sum(sum(inner.map(add, range(20), range(20))) for _ in range(5))
    talker.join()
    return total


def test_a_task_s_thread_streams_output_while_the_task_waits_over_tls(tls_combo, pki, capsys):
    """One SSL object, two threads: the processor reads its scheduler connection (children,
    cancels) while a task's thread writes output on it; every line arrives, in order."""
    with Client(tls_combo.get_address(), auth_key=KEY, tls_ca=pki.ca, stream_output=True) as client:
        assert client.submit(talk_while_waiting_for_children, 3000).result(timeout=TIMEOUT) == 5 * 380
    out = capsys.readouterr().out
    assert out == "".join("line %d\n" % i for i in range(3000))


def test_security_config_works_for_a_client_too(tls_combo, pki):
    with Client(tls_combo.get_address(), auth_key=KEY, security_config=SecurityConfig(tls_ca=pki.ca)) as client:
        assert client.submit(add, 2, 2).result(timeout=TIMEOUT) == 4


def test_the_system_store_is_used_and_ssl_cert_file_points_it_at_a_private_ca(tls_combo, pki, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", pki.ca)
    with Client(tls_combo.get_address(), auth_key=KEY) as client:
        assert client.submit(add, 3, 3).result(timeout=TIMEOUT) == 6


def test_monitor_over_tls(tls_combo, pki):
    from scaler import monitor

    status = monitor.snapshot(tls_combo.monitor_address, auth_key=KEY, tls_ca=pki.ca, timeout=TIMEOUT)
    assert len(status["workers"]) == 2
    with pytest.raises(monitor.MonitorError, match="certificate verify failed"):
        monitor.snapshot(tls_combo.monitor_address, auth_key=KEY, timeout=FAST)


def test_the_key_still_authenticates_over_tls(tls_combo, pki):
    with pytest.raises(AuthenticationError) as info:
        Client(tls_combo.get_address(), tls_ca=pki.ca, timeout_seconds=FAST)
    assert not isinstance(info.value, TLSError) and "key" in str(info.value)


def test_a_client_that_cannot_verify_the_certificate_fails_at_once(tls_combo, pki):
    for kwargs in ({}, {"tls_ca": pki.other_ca}):
        started = time.monotonic()
        with pytest.raises(TLSError) as info:
            Client(tls_combo.get_address(), auth_key=KEY, timeout_seconds=TIMEOUT, **kwargs)
        assert time.monotonic() - started < FAST
        message = str(info.value)
        assert "certificate verify failed" in message and "tls_ca" in message, message


def test_a_plain_client_on_the_tls_port_fails_fast(tls_combo):
    plain = tls_combo.get_address().replace("tls://", "tcp://")
    started = time.monotonic()
    with pytest.raises(TLSError) as info:
        Client(plain, auth_key=KEY, timeout_seconds=TIMEOUT)
    assert time.monotonic() - started < FAST
    assert "requires TLS" in str(info.value) and "tls://" in str(info.value)


def test_a_silent_connection_to_the_tls_port_delays_nobody(tls_combo, pki):
    host, port = tls_combo.get_address()[len("tls://"):].rsplit(":", 1)
    silent = [socket.create_connection((host, int(port)), timeout=FAST) for _ in range(5)]
    half = socket.create_connection((host, int(port)), timeout=FAST)
    half.sendall(b"\x16\x03\x01\x02\x00")  # the start of a ClientHello, and no more
    try:
        with Client(tls_combo.get_address(), auth_key=KEY, tls_ca=pki.ca) as client:
            assert client.submit(add, 4, 4).result(timeout=TIMEOUT) == 8
    finally:
        for sock in silent + [half]:
            sock.close()


def test_a_tls_client_on_a_plain_port_fails_fast(shared_combo, pki):
    started = time.monotonic()
    with pytest.raises(TLSError) as info:
        Client(shared_combo.get_address().replace("tcp://", "tls://"), tls_ca=pki.ca, timeout_seconds=TIMEOUT)
    assert time.monotonic() - started < FAST
    assert "tcp://" in str(info.value), info.value


def test_command_line_layout_over_tls(procs, pki, tmp_path):
    """A separate object storage server, a scheduler using it, a cluster, all over TLS, from the command line."""
    port = free_port_pair()
    scheduler_address = "tls://127.0.0.1:%d" % port
    storage_address = "tls://127.0.0.1:%d" % (port + 1)
    key = tmp_path / "key"
    key.write_text(KEY)
    os.chmod(str(key), 0o600)
    toml = tmp_path / "tls.toml"
    toml.write_text('[object_storage_server]\nbind_address = "%s"\ntls_cert = "%s"\ntls_key = "%s"\n'
                    'auth_key_file = "%s"\n' % (storage_address, pki.cert, pki.key, key))
    env = subprocess_env()
    storage = procs.python(["-m", "scaler.object_storage", "-c", str(toml)], "storage", env=env)
    scheduler = procs.python(["-m", "scaler.scheduler", scheduler_address, "-osa", storage_address,
                              "--tls-cert", pki.cert, "--tls-key", pki.key, "--tls-ca", pki.ca,
                              "--auth-key-file", str(key)], "scheduler", env=env)
    cluster = procs.python(["-m", "scaler.cluster", scheduler_address, "-n", "1", "--tls-ca", pki.ca,
                            "--auth-key-file", str(key)], "cluster", env=env)
    try:
        with Client(scheduler_address, auth_key=KEY, tls_ca=pki.ca, timeout_seconds=TIMEOUT) as client:
            assert client.submit(add, 5, 6).result(timeout=TIMEOUT) == 11
            assert len(client.submit(blob, 200 * 1024).result(timeout=TIMEOUT)) == 200 * 1024
            ref = client.send_object(b"z" * (2 * 1024 * 1024))
            assert client.submit(length, ref).result(timeout=TIMEOUT) == 2 * 1024 * 1024
    except Exception:
        raise AssertionError("no result:\n--- storage ---\n%s\n--- scheduler ---\n%s\n--- cluster ---\n%s"
                             % (storage.output.text(), scheduler.output.text(), cluster.output.text()))
    # a worker that cannot verify the scheduler exits at once, saying why
    bad = procs.python(["-m", "scaler.cluster", scheduler_address, "-n", "1", "--tls-ca", pki.other_ca,
                        "--auth-key-file", str(key), "--restart-workers", "false"], "bad cluster", env=env)
    bad.output.wait_for(r"certificate verify failed", TIMEOUT)
    for child in (bad, cluster, scheduler, storage):
        child.popen.send_signal(15)
    for child in (bad, cluster, scheduler, storage):
        exit_code_within(child, 30)
    assert "does not trust this server's certificate" in scheduler.output.text()  # logged by the scheduler


@pytest.mark.parametrize("args,words", [
    (["tls://127.0.0.1:{port}"], "tls:// address needs --tls-cert and --tls-key"),
    (["tcp://127.0.0.1:{port}", "--tls-cert", "{cert}", "--tls-key", "{key}"], "no address is tls://"),
    (["tls://127.0.0.1:{port}", "--tls-cert", "{cert}"], "--tls-cert and --tls-key go together"),
    (["tls://127.0.0.1:{port}", "--tls-cert", "{ca_key}", "--tls-key", "{key}"], "cannot load"),
])
def test_tls_configuration_errors_are_one_line(pki, args, words):
    import subprocess

    from e2e_support import REPO_ROOT

    values = {"port": free_port_pair(), "cert": pki.cert, "key": pki.key,
              "ca_key": os.path.join(os.path.dirname(pki.ca), "ca.key")}
    argv = [arg.format(**values) for arg in args]
    run = subprocess.run([sys.executable, "-m", "scaler.scheduler", *argv], cwd=REPO_ROOT, env=subprocess_env(),
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], run.stderr


def test_the_launcher_starts_a_tls_stack(procs, pki, tmp_path):
    from scaler import monitor

    port = free_port_pair()
    address = "tls://127.0.0.1:%d" % port
    toml = tmp_path / "stack.toml"
    toml.write_text('[scheduler]\nbind_address = "%s"\ntls_cert = "%s"\ntls_key = "%s"\n\n'
                    '[[worker_manager]]\ntype = "baremetal_native"\nscheduler_address = "%s"\nmode = "fixed"\n'
                    'max_task_concurrency = 1\ntls_ca = "%s"\n' % (address, pki.cert, pki.key, address, pki.ca))
    launcher = procs.python(["-m", "scaler", str(toml)], "launcher")
    try:
        status = monitor.wait_for("tls://127.0.0.1:%d" % (port + 2), lambda s: len(s["workers"]) == 1, TIMEOUT,
                                  tls_ca=pki.ca)
        assert status["scheduler"]["address"] == address
        with Client(address, tls_ca=pki.ca, timeout_seconds=TIMEOUT) as client:
            assert client.submit(add, 7, 8).result(timeout=TIMEOUT) == 15
    except Exception:
        raise AssertionError("no result:\n%s" % launcher.output.text())
    launcher.popen.send_signal(15)
    assert exit_code_within(launcher, 60) == 0, launcher.output.text()


def test_address_config_speaks_tls():
    from scaler.config.types.address import AddressConfig, SocketType

    address = AddressConfig.from_string("tls://127.0.0.1:8516")
    assert (address.type, address.host, address.port) == (SocketType.tls, "127.0.0.1", 8516)
    assert str(address) == "tls://127.0.0.1:8516"


def test_the_dashboard_follows_a_tls_monitor(tls_combo, pki, procs):
    import json
    import urllib.request

    from scaler.io.address import free_tcp_port

    def status_of(base):
        request = urllib.request.Request(base + "/api/status", headers={"Authorization": "Bearer %s" % KEY})
        with urllib.request.urlopen(request, timeout=FAST) as response:
            return json.loads(response.read())

    env = subprocess_env({"SCALER_AUTH_KEY": KEY})
    bases = {}
    for name, extra in (("trusting", ["--tls-ca", pki.ca]), ("distrusting", [])):
        port = free_tcp_port()
        gui = procs.python(["-m", "scaler.gui", tls_combo.monitor_address, "--gui-address", "127.0.0.1:%d" % port]
                           + extra, name, env=env)
        gui.output.wait_for(r"dashboard of .* on http://", TIMEOUT)
        bases[name] = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + TIMEOUT
    while True:
        trusting, distrusting = status_of(bases["trusting"]), status_of(bases["distrusting"])
        if trusting["connected"] and len(trusting["status"]["workers"]) == 2 and \
                "certificate verify failed" in distrusting["problem"]:
            break
        assert time.monotonic() < deadline, (trusting, distrusting)
        time.sleep(0.1)
    assert not distrusting["connected"]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="scaler_top is driven in tmux, which is missing")
def test_scaler_top_follows_a_tls_monitor(tls_combo, pki):
    from test_e2e_top import Tmux

    sessions = []
    try:
        base = [sys.executable, "-m", "scaler.top", tls_combo.monitor_address, "--auth-key-file"]
        key = os.path.join(os.path.dirname(pki.ca), "auth.key")
        with open(key, "w") as f:
            f.write(KEY)
        os.chmod(key, 0o600)
        trusting = Tmux(base + [key, "--tls-ca", pki.ca, "--interval", "0.2"])
        sessions.append(trusting)
        distrusting = Tmux(base + [key, "--interval", "0.2"])
        sessions.append(distrusting)
        trusting.wait_for(r"Total 1 manager\(s\) with 2 worker\(s\)", TIMEOUT)
        distrusting.wait_for(r"DISCONNECTED \(.*certificate verify failed", TIMEOUT)
    finally:
        for session in sessions:
            session.kill()
