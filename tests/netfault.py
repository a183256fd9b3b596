"""A small TCP proxy for tests that breaks connections on demand (stdlib only).

    proxy = FaultProxy(("127.0.0.1", upstream_port))   # listens on proxy.port
    ...
    proxy.fault("drop_mid_frame")   # or "stall", "reset", "half_close"

Faults act on the connections open at that moment, in the direction peer -> upstream:

* ``drop_mid_frame``: forward only the first few bytes of the next chunk, then close
  both sides (the upstream sees a truncated frame followed by EOF);
* ``stall``: forward nothing in either direction for ``stall_seconds``, then go on;
* ``reset``: close both sides with SO_LINGER 0 (the kernel sends RST);
* ``half_close``: shut down the write side towards the upstream (it reads EOF) while the
  other direction stays open.

New connections after a fault pass through untouched, so a peer that reconnects gets in.
"""

import select
import socket
import struct
import threading
import time
from typing import List, Optional, Tuple


class _Pair:
    def __init__(self, downstream: socket.socket, upstream: socket.socket) -> None:
        self.down = downstream
        self.up = upstream
        self.closed = False
        self.drop_after: Optional[int] = None  # bytes still to forward upstream before dropping
        self.stall_until = 0.0

    def close(self, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.down, self.up):
            try:
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            except OSError:
                pass


class FaultProxy:
    def __init__(self, upstream: Tuple[str, int], stall_seconds: float = 10.0) -> None:
        self.upstream = upstream
        self.stall_seconds = stall_seconds
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.pairs: List[_Pair] = []
        self.accepted = 0
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return "tcp://127.0.0.1:%d" % self.port

    def live(self) -> List[_Pair]:
        with self._lock:
            return [pair for pair in self.pairs if not pair.closed]

    def fault(self, kind: str) -> int:
        """Break every open connection the ``kind`` way; returns how many were hit."""
        pairs = self.live()
        for pair in pairs:
            if kind == "drop_mid_frame":
                pair.drop_after = 5
            elif kind == "stall":
                pair.stall_until = time.monotonic() + self.stall_seconds
            elif kind == "reset":
                pair.close(reset=True)
            elif kind == "half_close":
                try:
                    pair.up.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            else:
                raise ValueError(kind)
        return len(pairs)

    def close(self) -> None:
        self._stop = True
        self._thread.join(10)
        self.listener.close()
        for pair in self.live():
            pair.close()

    def _run(self) -> None:
        while not self._stop:
            with self._lock:
                pairs = [pair for pair in self.pairs if not pair.closed]
                self.pairs = pairs
            now = time.monotonic()
            readable = [self.listener]
            for pair in pairs:
                if pair.stall_until <= now:
                    readable += [pair.down, pair.up]
            try:
                ready, _, _ = select.select(readable, [], [], 0.05)
            except (OSError, ValueError):
                continue
            for sock in ready:
                if sock is self.listener:
                    self._accept()
                    continue
                pair = next((p for p in pairs if sock is p.down or sock is p.up), None)
                if pair is None or pair.closed:
                    continue
                self._pump(pair, sock)

    def _accept(self) -> None:
        try:
            down, _ = self.listener.accept()
            up = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            return
        with self._lock:
            self.pairs.append(_Pair(down, up))
            self.accepted += 1

    @staticmethod
    def _pump(pair: _Pair, sock: socket.socket) -> None:
        other = pair.up if sock is pair.down else pair.down
        try:
            data = sock.recv(65536)
        except OSError:
            pair.close()
            return
        if not data:
            try:
                other.shutdown(socket.SHUT_WR)  # pass the EOF on; the other way stays open
            except OSError:
                pair.close()
            if sock is pair.up:
                pair.close()
            return
        if sock is pair.down and pair.drop_after is not None:
            data = data[:pair.drop_after]
            try:
                other.sendall(data)
            except OSError:
                pass
            pair.close()
            return
        try:
            other.sendall(data)
        except OSError:
            pair.close()
