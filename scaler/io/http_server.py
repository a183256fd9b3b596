"""A threaded HTTP server that bounds what its peers can hold (the dashboard, the webhook).

``http.server.ThreadingHTTPServer`` gives each connection a thread and waits on it without
a timeout: a peer that connects and says nothing holds its thread for ever, and any number
of them can pile up. :class:`BoundedHTTPServer` closes a connection silent for
``request_timeout`` seconds (mid-request, between requests, in the TLS handshake, or
blocking a write because it does not read), closes a new connection at once while
``max_connections`` are open, and with ``tls`` (an ``ssl.SSLContext``, ``tls.server_context``) serves HTTPS only,
the handshake running in the connection's own thread so that a stalled one holds nobody up.
"""

import logging
import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any, Optional, Tuple

logger = logging.getLogger(__name__)


class BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], handler: Any, *, sock: Optional[socket.socket] = None,
                 tls: Any = None, max_connections: int = 256, request_timeout: float = 30.0) -> None:
        """Bind ``address``, or serve on ``sock``, already listening (``address`` is then unused)."""
        if sock is None:
            super().__init__(address, handler)
        else:
            self.address_family = sock.family
            super().__init__(sock.getsockname()[:2], handler, bind_and_activate=False)
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()
        self.tls = tls
        self.max_connections = max_connections
        self.request_timeout = request_timeout  # read as each connection starts
        self.open_connections = 0
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            full = self.open_connections >= self.max_connections
            if not full:
                self.open_connections += 1
        if full:
            logger.debug("refusing %s: %d connections open", client_address, self.max_connections)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # its thread counts it down
        except BaseException:
            self._closed_one()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._closed_one()

    def _closed_one(self) -> None:
        with self._open_lock:
            self.open_connections -= 1

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's thread: the TLS handshake (under the timeout), then HTTP."""
        request.settimeout(self.request_timeout)
        if self.tls is None:
            self.RequestHandlerClass(request, client_address, self)
            return
        try:
            secure = self.tls.wrap_socket(request, server_side=True)  # takes over the descriptor
        except (OSError, ValueError) as exc:
            logger.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            self.RequestHandlerClass(secure, client_address, self)
        finally:
            secure.close()


__all__ = ["BoundedHTTPServer"]
