"""The dashboard's HTTP server: one page, a JSON snapshot, a Server-Sent Events stream.

Routes (all ``GET``):

- ``/`` and ``/static/...``: the page (``static/index.html``, ``app.js``, ``app.css``),
  served from package data with a Content-Security-Policy that allows nothing but this
  origin: the page cannot load anything from elsewhere, so it works air-gapped.
- ``/api/config``: what the page needs before anything else (is a token required, the
  status period, how much history is kept). Never needs the token.
- ``/api/status``: the latest snapshot, plus ``"connected"``/``"problem"`` (the link to
  the scheduler).
- ``/api/history``: recent points for the charts (throughput, queue, per-worker CPU).
- ``/api/events``: ``text/event-stream``; an ``event: status`` with each new snapshot
  (at most one per ``broadcast_interval_seconds``), a comment line every 15 s otherwise.

With an auth key (``--auth-key`` or ``SCALER_AUTH_KEY``, the same key the scheduler
uses), every ``/api/`` route but ``/api/config`` needs it as a token: the
``Authorization: Bearer TOKEN`` header or ``?token=TOKEN`` (EventSource cannot send
headers); the page asks for it. It is bound to loopback unless told otherwise.

With ``--tls-cert`` and ``--tls-key`` it serves HTTPS only. A connection silent for
``REQUEST_TIMEOUT_SECONDS`` is closed, and at most ``MAX_CONNECTIONS`` are open at once
(``io/http_server.py``).
"""

import collections
import hmac
import json
import logging
import os
import signal
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Deque, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from ..config.commands import split_host_port
from ..io.http_server import BoundedHTTPServer
from ..monitor import Follower, Status
from ..utility.process import watch_lifeline

logger = logging.getLogger(__name__)

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "app.css": "text/css; charset=utf-8"}
MAX_STREAMS = 64
REQUEST_TIMEOUT_SECONDS = 30.0
MAX_CONNECTIONS = 256
KEEPALIVE_SECONDS = 15.0
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def listen_http(gui_address: str) -> socket.socket:
    """Bind the dashboard's HOST:PORT (IPv6 hosts in brackets or split on the last ':')."""
    host, port = split_host_port(gui_address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class History:
    """Recent points for the charts, a bounded ring: one point per snapshot."""

    def __init__(self, seconds: float, interval: float) -> None:
        self.points: Deque[Dict[str, Any]] = collections.deque(maxlen=max(10, int(seconds / max(interval, 0.1)) + 1))
        self.lock = threading.Lock()

    def add(self, status: Status) -> None:
        tasks = status.get("tasks", {})
        rates = status.get("rates", {})
        point = {
            "t": status.get("time", time.time()),
            "finished": rates.get("finished", 0.0),
            "submitted": rates.get("submitted", 0.0),
            "failed": rates.get("failed", 0.0),
            "queued": tasks.get("queued", 0) + tasks.get("waiting", 0),
            "on_workers": tasks.get("assigned", 0),
            "cpu": {w["name"]: round(min(100.0, w.get("processor_cpu", 0.0)), 0) for w in status.get("workers", ())},
        }
        with self.lock:
            self.points.append(point)

    def as_list(self) -> List[Dict[str, Any]]:
        with self.lock:
            return list(self.points)


class Dashboard:
    """What the request handlers share: the follower, the history, the settings."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.token: Optional[str] = config.auth_key or None
        self.history = History(config.history_seconds, config.status_report_interval_seconds)
        self.follower = Follower(config.monitor_address, config.auth_key,
                                 timeout=max(5.0, 5 * config.status_report_interval_seconds),
                                 on_status=self.history.add, tls_ca=config.tls_ca)
        self.stopping = threading.Event()
        self.streams = 0
        self.streams_lock = threading.Lock()

    def authorized(self, handler: BaseHTTPRequestHandler, query: Dict[str, List[str]]) -> bool:
        if self.token is None:
            return True
        given = ""
        header = handler.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[len("Bearer "):].strip()
        elif query.get("token"):
            given = query["token"][0]
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))

    def status_document(self) -> Dict[str, Any]:
        follower = self.follower
        return {"connected": follower.connected, "problem": follower.problem, "status": follower.latest}


class _Handler(BaseHTTPRequestHandler):
    server_version = "scaler-gui"
    protocol_version = "HTTP/1.1"
    dashboard: Dashboard  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query)
        if path in ("/", "/index.html"):
            self._static("index.html")
        elif path.startswith("/static/") and path[len("/static/"):] in STATIC_FILES:
            self._static(path[len("/static/"):])
        elif path == "/api/config":
            config = self.dashboard.config
            self._json({"auth_required": self.dashboard.token is not None,
                        "monitor_address": config.monitor_address,
                        "status_interval": config.status_report_interval_seconds,
                        "history_seconds": config.history_seconds})
        elif path.startswith("/api/"):
            if not self.dashboard.authorized(self, query):
                self._json({"error": "a token is required: the scheduler's auth key"}, 401)
            elif path == "/api/status":
                self._json(self.dashboard.status_document())
            elif path == "/api/history":
                self._json({"points": self.dashboard.history.as_list()})
            elif path == "/api/events":
                self._stream()
            else:
                self._json({"error": "not found"}, 404)
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        else:
            self._json({"error": "not found"}, 404)

    def _send(self, code: int, body: bytes, content_type: str, extra: Tuple[Tuple[str, str], ...] = ()) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _json(self, document: Any, code: int = 200) -> None:
        self._send(code, json.dumps(document, separators=(",", ":")).encode("utf-8"), "application/json")

    def _static(self, name: str) -> None:
        with open(os.path.join(STATIC_DIR, name), "rb") as f:
            body = f.read()
        self._send(200, body, STATIC_FILES[name], (("Content-Security-Policy", CSP),))

    def _stream(self) -> None:
        dashboard = self.dashboard
        with dashboard.streams_lock:
            if dashboard.streams >= MAX_STREAMS:
                self._json({"error": "too many open dashboards"}, 503)
                return
            dashboard.streams += 1
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self._events()
        except (OSError, ValueError):
            pass  # the page went away
        finally:
            with dashboard.streams_lock:
                dashboard.streams -= 1

    def _events(self) -> None:
        dashboard = self.dashboard
        follower = dashboard.follower
        interval = dashboard.config.broadcast_interval_seconds
        self.wfile.write(b"retry: 2000\n\n")
        sequence = -1
        connected: Optional[bool] = None
        last_write = time.monotonic()
        while not dashboard.stopping.is_set():
            status = follower.wait_newer(sequence, min(1.0, KEEPALIVE_SECONDS))
            now = time.monotonic()
            if status is not None or follower.connected != connected:
                document = dashboard.status_document()
                latest = document["status"]
                if latest is not None:
                    sequence = latest.get("sequence", sequence)
                connected = document["connected"]
                self.wfile.write(b"event: status\ndata: " + json.dumps(document, separators=(",", ":")).encode("utf-8")
                                 + b"\n\n")
                self.wfile.flush()
                last_write = now
                if interval > 0:
                    dashboard.stopping.wait(interval)
            elif now - last_write >= KEEPALIVE_SECONDS:
                self.wfile.write(b": keepalive\n\n")
                self.wfile.flush()
                last_write = now


class DashboardHTTPServer(BoundedHTTPServer):
    def __init__(self, sock: socket.socket, dashboard: Dashboard, tls: Optional[ssl.SSLContext] = None) -> None:
        handler = type("Handler", (_Handler,), {"dashboard": dashboard})
        super().__init__(sock.getsockname()[:2], handler, sock=sock, tls=tls, max_connections=MAX_CONNECTIONS,
                         request_timeout=REQUEST_TIMEOUT_SECONDS)
        self.dashboard = dashboard


def tls_context(config: Any) -> Optional[ssl.SSLContext]:
    """HTTPS when the configuration has a certificate and key (checked when it was loaded)."""
    if not getattr(config, "tls_cert", None):
        return None
    from ..io.tls import server_context
    return server_context(config.tls_cert, config.tls_key)


def serve(config: Any, sock: socket.socket) -> Tuple[DashboardHTTPServer, threading.Thread]:
    """Start the dashboard on ``sock`` in a background thread (tests, embedding); stop with :func:`stop`."""
    dashboard = Dashboard(config)
    server = DashboardHTTPServer(sock, dashboard, tls_context(config))
    dashboard.follower.start()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="gui-http",
                              daemon=True)
    thread.start()
    return server, thread


def stop(server: DashboardHTTPServer, thread: Optional[threading.Thread] = None) -> None:
    server.dashboard.stopping.set()
    server.shutdown()
    server.server_close()
    server.dashboard.follower.stop()
    if thread is not None:
        thread.join(5.0)


def run_dashboard(config: Any, sock: socket.socket, lifeline_fd: Optional[int] = None) -> None:
    """Serve until SIGINT/SIGTERM or the parent's death."""
    dashboard = Dashboard(config)
    tls = tls_context(config)
    server = DashboardHTTPServer(sock, dashboard, tls)

    def request_stop(*_args: Any) -> None:
        dashboard.stopping.set()
        threading.Thread(target=server.shutdown, name="gui-stop", daemon=True).start()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    watch_lifeline(lifeline_fd, request_stop)
    host, port = sock.getsockname()[:2]
    logger.info("dashboard of %s on %s://%s:%d/%s", config.monitor_address, "http" if tls is None else "https",
                "[%s]" % host if ":" in host else host, port, " (token required)" if dashboard.token else "")
    dashboard.follower.start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        dashboard.stopping.set()
        server.server_close()
        dashboard.follower.stop()
