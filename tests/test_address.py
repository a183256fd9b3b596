"""free_tcp_port: a run of ports outside the range the kernel hands to outgoing connections."""

import socket

from scaler.io.address import _ephemeral_range, free_tcp_port


def test_free_tcp_port_gives_a_bindable_run_below_the_ephemeral_range():
    low, _ = _ephemeral_range()
    for _ in range(20):
        port = free_tcp_port(count=3)
        assert port + 2 < low
        socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(3)]
        try:
            for offset, sock in enumerate(socks):
                sock.bind(("127.0.0.1", port + offset))
        finally:
            for sock in socks:
                sock.close()


def test_free_tcp_port_skips_a_run_with_a_taken_port(monkeypatch):
    import random  # scaler.io.address imports it where it picks a port

    busy = free_tcp_port(count=1)
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", busy + 1))
    taken.listen(1)
    candidates = iter([busy, busy + 10])
    monkeypatch.setattr(random, "randint", lambda low, high: next(candidates))
    try:
        assert free_tcp_port(count=2) == busy + 10
    finally:
        taken.close()
