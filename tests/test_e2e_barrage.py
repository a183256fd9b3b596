"""Every kind of bad peer at once, on every listener, while a good client works.

Against a plain combo and a TLS one, on the scheduler, object storage and monitor ports at
the same time: hundreds of silent connections, garbage instead of a handshake, truncated
frames, giant frame headers before the handshake, and handshakes with a role the port
does not take. A well-behaved client's map (with results bigger than a message, so object
storage is used) must complete, correct, meanwhile and afterwards.
"""

import socket
import struct
import sys
import threading

import pytest

from scaler import Client, SchedulerClusterCombo
from scaler.config.common.security import SecurityConfig
from scaler.protocol.codec import encode
from scaler.protocol.messages import MAGIC, PROTOCOL_VERSION, ROLE_MANAGER, Hello
from tls_support import NEEDS_OPENSSL, make_pki

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="e2e tests need Linux")

TIMEOUT = 90
SILENT_PER_PORT = 150


def blob(i):
    return bytes(100 * 1024) + bytes([i % 256])


def _host_port(address):
    host, port = address.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def _barrage(addresses, ready, stop, counts):
    """Open the bad connections, set ``ready``; keep them until ``stop``, then close them."""
    opened = []

    def connect(address):
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect(_host_port(address))
        except OSError:
            sock.close()
            return None
        opened.append(sock)
        return sock

    def send(sock, data):
        try:
            sock.sendall(data)
        except OSError:
            pass

    for address in addresses:
        for _ in range(SILENT_PER_PORT):
            connect(address)
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\xff" * 4096, b"\x16\x03\x01" + b"\0" * 100):
            sock = connect(address)
            if sock is not None:
                send(sock, junk)
        for announced in (2 ** 40, 2 ** 62, 1000):  # giant headers, and a frame that stops after 3 bytes
            sock = connect(address)
            if sock is not None:
                send(sock, struct.pack("<Q", announced) + b"abc")
        sock = connect(address)  # a wrong role (the ports take no manager, or no manager over plain Hello)
        if sock is not None:
            send(sock, encode(Hello(MAGIC, PROTOCOL_VERSION, ROLE_MANAGER, b"n" * 16)))
    counts.append(len(opened))
    ready.set()
    stop.wait(TIMEOUT)
    for sock in opened:
        sock.close()


def _run_against(combo, **client_options):
    addresses = [combo.get_address(), combo.object_storage_address, combo.monitor_address]
    ready, stop, counts = threading.Event(), threading.Event(), []
    thread = threading.Thread(target=_barrage, args=(addresses, ready, stop, counts), daemon=True)
    thread.start()
    try:
        assert ready.wait(TIMEOUT), "the bad peers could not even connect"
        assert counts[0] >= 3 * SILENT_PER_PORT, counts  # every port took them: they are all there
        with Client(combo.get_address(), timeout_seconds=TIMEOUT, **client_options) as client:
            results = client.map(blob, range(60))
            assert [len(r) for r in results] == [100 * 1024 + 1] * 60
            assert [r[-1] for r in results] == [i % 256 for i in range(60)]
            ref = client.send_object(bytes(512 * 1024))
            assert client.submit(len, ref).result(timeout=TIMEOUT) == 512 * 1024
    finally:
        stop.set()
        thread.join(TIMEOUT)
    with Client(combo.get_address(), timeout_seconds=TIMEOUT, **client_options) as client:  # and afterwards
        assert client.map(blob, range(5))[4][-1] == 4


def test_a_barrage_on_plain_listeners_delays_nobody():
    with SchedulerClusterCombo(n_workers=2, logging_level="ERROR") as combo:
        _run_against(combo)


@NEEDS_OPENSSL
def test_a_barrage_on_tls_listeners_delays_nobody(tmp_path):
    pki = make_pki(str(tmp_path))
    security = SecurityConfig(tls_cert=pki.cert, tls_key=pki.key, tls_ca=pki.ca)
    with SchedulerClusterCombo(n_workers=2, security_config=security, logging_level="ERROR") as combo:
        assert combo.get_address().startswith("tls://") and combo.monitor_address.startswith("tls://")
        _run_against(combo, tls_ca=pki.ca)
