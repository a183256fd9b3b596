"""TLS under the event loop: Connection over a socketpair with real certificates, no subprocesses.

The certificates are made at test time (``tls_support``); every wait has a deadline (the
helpers of ``test_connection``).
"""

import socket

import pytest

from scaler.io import connection as connection_module
from scaler.io import tls
from scaler.io.connection import Connection
from scaler.protocol import messages as m
from scaler.protocol.framing import BIG_FRAME
from test_connection import Recorder, nonblocking_pair, pattern, recv_frame, run_until
from tls_support import NEEDS_OPENSSL, make_pki

pytestmark = NEEDS_OPENSSL


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def loop():
    from scaler.io.loop import EventLoop

    loop = EventLoop()
    yield loop
    loop.close()


def tls_pair(loop, pki, *, ca="ca", hostname="localhost", acceptor_key=None, connector_key=None, cert=None,
             key=None, client_tls=True, server_tls=True):
    """An accepting and a dialling Connection with TLS on the two ends of a socketpair."""
    a_sock, c_sock = nonblocking_pair()
    acceptor, connector = Recorder(), Recorder()
    server = tls.server_context(cert or pki.cert, key or pki.key) if server_tls else None
    a = Connection(loop, a_sock, acceptor, peer="connector", auth_key=acceptor_key, allowed_roles=(m.ROLE_CLIENT,),
                   tls=server)
    client = tls.client_context(pki.ca if ca == "ca" else ca) if client_tls else None
    c = Connection(loop, c_sock, connector, peer="acceptor", auth_key=connector_key, role=m.ROLE_CLIENT,
                   tls=client, server_hostname=hostname if client_tls else None)
    return a, acceptor, c, connector


def open_tls_pair(loop, pki, **kwargs):
    a, acceptor, c, connector = tls_pair(loop, pki, **kwargs)
    run_until(loop, lambda: (a.opened and c.opened) or acceptor.closed or connector.closed)
    assert a.opened and c.opened, (acceptor.closed, connector.closed)
    return a, acceptor, c, connector


@pytest.mark.parametrize("key", [None, b"s3cret"])
def test_tls_then_the_key_handshake_opens_both_ends(loop, pki, key):
    a, acceptor, c, connector = open_tls_pair(loop, pki, acceptor_key=key, connector_key=key)
    assert a.tls and c.tls
    submit = m.TaskSubmit(b"task", 0, b"func", b"call \x00\xff", "", 0)
    c.send(submit)
    result = m.TaskResult(b"task", m.STATUS_OK, b"\x80\x04N.", "")
    a.send(result)
    run_until(loop, lambda: acceptor.messages and connector.messages)
    assert acceptor.messages == [submit] and connector.messages == [result]


def test_the_key_still_authenticates_over_tls(loop, pki):
    a, acceptor, c, connector = tls_pair(loop, pki, acceptor_key=b"one", connector_key=b"two")
    run_until(loop, lambda: acceptor.closed and connector.closed)
    assert "auth" in c.failure.lower() and not c.opened


def test_many_small_frames_both_ways_in_order(loop, pki):
    a, acceptor, c, connector = open_tls_pair(loop, pki)
    n = 20000
    for i in range(n):
        c.send(m.Heartbeat(float(i)))
        a.send(m.TaskCancel(b"%d" % i))
    run_until(loop, lambda: len(acceptor.messages) == n and len(connector.messages) == n)
    assert [x.sent_at for x in acceptor.messages] == [float(i) for i in range(n)]
    assert [x.task_id for x in connector.messages] == [b"%d" % i for i in range(n)]
    assert c.write_backlog == 0 and a.write_backlog == 0


@pytest.mark.parametrize("budget", [connection_module._READ_BUDGET, 1000])
def test_big_frames_mixed_with_small_ones(loop, pki, monkeypatch, budget):
    """A small read budget stops reading in the middle of a TLS record: the decrypted bytes
    left in the SSL object (which select() cannot see) must still be delivered."""
    monkeypatch.setattr(connection_module, "_READ_BUDGET", budget)
    a, acceptor, c, connector = open_tls_pair(loop, pki)
    payloads = [pattern(3 * BIG_FRAME + 1, 1), pattern(70 * 1024, 2), pattern(9 * BIG_FRAME, 3)]
    for i, payload in enumerate(payloads):
        c.send(m.Heartbeat(float(i)))
        c.send(m.ObjectPut(b"obj%d" % i, b"owner", payload))
        a.send(m.ObjectGetReply(b"obj%d" % i, True, payload))
    c.send(m.Heartbeat(99.0))
    a.send(m.Heartbeat(99.0))
    run_until(loop, lambda: len(acceptor.messages) == 2 * len(payloads) + 1 and
              len(connector.messages) == len(payloads) + 1)
    got = acceptor.messages
    assert got[-1] == m.Heartbeat(99.0) and connector.messages[-1] == m.Heartbeat(99.0)
    for i, payload in enumerate(payloads):
        assert got[2 * i] == m.Heartbeat(float(i))
        assert got[2 * i + 1].payload == payload
        assert connector.messages[i].payload == payload
    assert c.write_backlog == 0 and a.write_backlog == 0


def test_direct_writes_run_the_loop_write_path_through_a_full_socket_in_order(loop, pki):
    """send_holding_loop_lock (a client's submit written by the caller's thread over TLS;
    here the loop is not running, so no lock is needed): it runs the loop's own write
    path, so when the peer does not read, a record the socket refuses stays the one to
    retry as is, later frames queue behind it, and the peer gets every frame whole and in
    order. While a batch is being gathered it writes nothing (the batch goes first). The
    threaded side is tests/test_e2e_tls.py (two threads submitting and leading)."""
    from scaler.protocol.codec import encode_parts

    a, acceptor, c, connector = open_tls_pair(loop, pki)
    gathered = m.TaskSubmit(b"gathered", 0, b"f" * 32, b"call", "", 0)
    c.send(gathered)  # a batchable message: a batch is now being gathered
    assert c._batch and not c.send_holding_loop_lock(encode_parts(m.TaskCancel(b"x")))
    run_until(loop, lambda: acceptor.messages == [gathered])
    sent, direct = [], 0
    for i in range(200):  # the loop is not running: nobody reads, the socket fills up
        msg = m.TaskSubmit(b"t%05d" % i, 0, b"f" * 32, pattern(50000, i), "", 0)
        assert c.send_holding_loop_lock(encode_parts(msg))
        direct += not c._wbuf and c._tls_chunk is None  # all of it written at once
        sent.append(msg)
    assert 1 <= direct < len(sent)  # the socket filled up on the way
    run_until(loop, lambda: len(acceptor.messages) == len(sent) + 1 and not c._wbuf and c._tls_chunk is None)
    assert acceptor.messages[1:] == sent
    assert c.write_backlog == 0


def test_a_direct_write_that_fails_leaves_the_close_to_the_loop(loop, pki):
    """send_holding_loop_lock into a connection whose peer is gone: the failed write does
    not close the connection (and run its owner's close handler) in the writing thread,
    which holds the client's locks; the close is queued for the loop, whose thread is
    woken for it."""
    import threading

    from scaler.protocol.codec import encode_parts

    a, acceptor, c, connector = open_tls_pair(loop, pki)
    c.write_lock = threading.RLock()  # as the client sets it (its send lock)
    a.sock.close()  # the peer's end is gone without a word: the next write fails
    msg = m.TaskSubmit(b"t", 0, b"f" * 32, pattern(300000, 1), "", 0)
    assert c.send_holding_loop_lock(encode_parts(msg))
    assert connector.closed is None and not c.closed  # not here...
    assert loop._soon and loop._wake_pending  # ...but on the loop's thread, which was woken
    run_until(loop, lambda: connector.closed is not None)  # (by the failed write, or the peer's end first)


def test_a_plain_peer_on_a_tls_address_is_told_and_refused(loop, pki):
    a, acceptor, c, connector = tls_pair(loop, pki, client_tls=False)
    run_until(loop, lambda: acceptor.closed and connector.closed)
    assert not c.opened and c.tls_failure
    assert "requires TLS" in c.failure and "tls://" in c.failure, c.failure


def test_a_plain_peer_gets_a_rejected_frame(loop, pki):
    """What an old client, or any plain peer, reads from a TLS address: one Rejected frame, then EOF."""
    a_sock, raw = socket.socketpair()
    a_sock.setblocking(False)
    acceptor = Recorder()
    Connection(loop, a_sock, acceptor, peer="raw", allowed_roles=(m.ROLE_CLIENT,),
               tls=tls.server_context(pki.cert, pki.key))
    from scaler.protocol.codec import encode
    from scaler.protocol.handshake import ConnectorHandshake
    raw.sendall(encode(ConnectorHandshake(m.ROLE_CLIENT, None).start()))
    run_until(loop, lambda: acceptor.closed)
    reply = recv_frame(raw)
    assert isinstance(reply, m.Rejected) and "requires TLS" in reply.reason
    assert raw.recv(10) == b""
    raw.close()


def test_a_tls_peer_on_a_plain_address_fails_fast_and_says_so(loop, pki):
    a, acceptor, c, connector = tls_pair(loop, pki, server_tls=False)
    run_until(loop, lambda: acceptor.closed and connector.closed, timeout=5)
    assert not c.opened and c.tls_failure
    assert "TLS" in c.failure and "tcp://" in c.failure, c.failure


@pytest.mark.parametrize("case,words", [
    ("unknown CA", "certificate verify failed"),
    ("wrong name", "certificate verify failed"),
])
def test_an_unverifiable_server_is_refused(loop, pki, case, words):
    if case == "unknown CA":
        kwargs = {"ca": pki.other_ca}
    else:
        kwargs = {"cert": pki.wrong_name_cert, "key": pki.wrong_name_key}
    a, acceptor, c, connector = tls_pair(loop, pki, **kwargs)
    run_until(loop, lambda: acceptor.closed and connector.closed, timeout=5)
    assert not c.opened and not a.opened and c.tls_failure
    assert words in c.failure, c.failure
    if case == "wrong name":
        assert "Hostname mismatch" in c.failure and "localhost" in c.failure, c.failure
    else:
        assert "tls_ca" in c.failure and "SSL_CERT_FILE" in c.failure, c.failure


def test_the_system_store_follows_ssl_cert_file(pki, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", pki.ca)
    context = tls.client_context(None)
    assert any("scaler test ca" in str(cert.get("subject")) for cert in context.get_ca_certs())


@pytest.mark.parametrize("which", ["cert", "key", "ca"])
def test_unusable_files_are_one_line_value_errors(pki, tmp_path, which):
    missing = str(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for bad in (missing, str(garbage)):
        with pytest.raises(ValueError) as info:
            if which == "ca":
                tls.client_context(bad)
            elif which == "cert":
                tls.server_context(bad, pki.key)
            else:
                tls.server_context(pki.cert, bad)
        assert bad in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="does not match"):
        tls.server_context(pki.cert, pki.wrong_name_key)
