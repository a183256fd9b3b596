"""scaler.io.http_server.BoundedHTTPServer: the threaded HTTP server behind the dashboard and
the worker managers' webhook keeps silent peers from holding it (real sockets, loopback)."""

import socket
import ssl
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler

import pytest

from e2e_support import closed_by_peer
from scaler.io.http_server import BoundedHTTPServer

TIMEOUT = 10.0


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def serve():
    servers = []

    def start(**kwargs):
        server = BoundedHTTPServer(("127.0.0.1", 0), _Hello, **kwargs)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server, server.server_address[1]
    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def _read_to_close(sock, seconds):
    """Everything the server sends until it closes, within ``seconds`` (fails if it does not)."""
    sock.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data


def _wait_for(predicate, seconds=TIMEOUT):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_silent_peer_is_dropped_after_the_timeout_and_counted_out(serve):
    server, port = serve(request_timeout=2.0)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        _wait_for(lambda: server.open_connections == 1)
        assert not closed_by_peer(sock, 0.1)  # not at once
        assert closed_by_peer(sock, TIMEOUT)
    _wait_for(lambda: server.open_connections == 0)


def test_past_the_bound_a_new_connection_is_closed_at_once(serve):
    server, port = serve(request_timeout=60.0, max_connections=3)
    held = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(3)]
    try:
        _wait_for(lambda: server.open_connections == 3)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as extra:
            assert closed_by_peer(extra, 5.0)
        held.pop().close()  # one leaves: room for one more
        _wait_for(lambda: server.open_connections == 2)
        with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=TIMEOUT) as response:
            assert response.read() == b"hello"
    finally:
        for sock in held:
            sock.close()
    _wait_for(lambda: server.open_connections == 0)


def test_https_only_and_a_stalled_handshake_holds_nobody_up(serve, tmp_path):
    """The handshake runs in the connection's thread: with a 60 s timeout, a peer that never
    starts it would hold a server that shook hands on its accepting thread for a minute,
    longer than the served request's own 10 s timeout."""
    from tls_support import OPENSSL, make_pki
    if OPENSSL is None:
        pytest.skip("the openssl command is needed to make test certificates")
    from scaler.io.tls import server_context
    pki = make_pki(str(tmp_path))
    server, port = serve(tls=server_context(pki.cert, pki.key), request_timeout=60.0)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as stalled:
        _wait_for(lambda: server.open_connections == 1)
        context = ssl.create_default_context(cafile=pki.ca)
        with urllib.request.urlopen("https://127.0.0.1:%d/" % port, timeout=TIMEOUT, context=context) as response:
            assert response.read() == b"hello"
        assert not closed_by_peer(stalled, 0.1)  # still waiting for its handshake
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not _read_to_close(plain, TIMEOUT).startswith(b"HTTP/")  # not TLS: closed (an alert at most)
    _wait_for(lambda: server.open_connections == 0)


def test_a_tls_peer_that_never_shakes_hands_is_dropped_after_the_timeout(serve, tmp_path):
    from tls_support import OPENSSL, make_pki
    if OPENSSL is None:
        pytest.skip("the openssl command is needed to make test certificates")
    from scaler.io.tls import server_context
    pki = make_pki(str(tmp_path))
    server, port = serve(tls=server_context(pki.cert, pki.key), request_timeout=1.0)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as stalled:
        assert closed_by_peer(stalled, TIMEOUT)
    _wait_for(lambda: server.open_connections == 0)
