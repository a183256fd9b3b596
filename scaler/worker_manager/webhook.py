"""The webhook: a small JSON HTTP API in front of a worker manager (``http.server``).

``GET /`` or ``GET /status`` returns the manager's status. ``POST /`` takes
``{"action": ...}``: ``get_worker_adapter_info``, ``start_worker_group``,
``shutdown_worker_group`` (with ``worker_group_id``). Errors are JSON ``{"error": ...}``
with a 4xx/5xx status. Requests run on the server's threads; the work itself is handed
to the manager's loop and waited for with a timeout.
"""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict, Tuple

from ..config.capabilities import parse_capabilities
from ..io.http_server import BoundedHTTPServer
from .errors import GroupError, Refusal

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
REQUEST_TIMEOUT_SECONDS = 10.0  # a client silent this long is dropped
MAX_CONNECTIONS = 64
HTTP_STATUS = {  # the answer to a request the manager refuses (GroupError), by reason
    Refusal.BAD_REQUEST: 400,
    Refusal.UNKNOWN_GROUP: 404,
    Refusal.FIXED_POOL: 405,
    Refusal.AT_CAPACITY: 429,
    Refusal.PRELOAD_FAILED: 500,
    Refusal.STOPPING: 503,
    Refusal.NO_ANSWER: 503,
}


class WebhookServer:
    """Serves the API on its own threads for ``manager`` (a ``NativeWorkerManager``)."""

    def __init__(self, host: str, port: int, manager: Any) -> None:
        handler = type("Handler", (_Handler,), {"manager": manager})
        self.httpd = BoundedHTTPServer((host, port), handler, max_connections=MAX_CONNECTIONS,
                                       request_timeout=REQUEST_TIMEOUT_SECONDS)
        self.address: Tuple[str, int] = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="scaler-webhook", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    manager: Any = None
    server_version = "scaler-worker-manager"

    def log_message(self, fmt: str, *args: Any) -> None:
        logger.debug("webhook %s: " + fmt, self.client_address[0], *args)

    def _reply(self, status: int, body: Dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/") in ("", "/status"):
            try:
                self._reply(200, self.manager.call_in_loop(self.manager.status))
            except Exception as error:
                self._reply(503, {"error": str(error)})
        else:
            self._reply(404, {"error": "no such route: GET %s (try GET /status or POST /)" % self.path})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") not in ("", "/action"):
            self._reply(404, {"error": "no such route: POST %s (POST / with {\"action\": ...})" % self.path})
            return
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self._reply(411, {"error": "Content-Length required"})
            return
        try:
            length = int(length_text)
        except ValueError:
            self._reply(400, {"error": "bad Content-Length"})
            return
        if length < 0 or length > MAX_BODY_BYTES:
            self._reply(413, {"error": "body of %d bytes exceeds the limit of %d" % (length, MAX_BODY_BYTES)})
            self.close_connection = True
            return
        try:
            body = json.loads(self.rfile.read(length).decode("utf-8") or "null")
        except (ValueError, UnicodeDecodeError) as error:
            self._reply(400, {"error": "invalid JSON: %s" % error})
            return
        if not isinstance(body, dict) or not body.get("action"):
            self._reply(400, {"error": "No action specified"})
            return
        self._act(str(body["action"]), body)

    def _act(self, action: str, body: Dict[str, Any]) -> None:
        manager = self.manager
        try:
            if action == "get_worker_adapter_info":
                status = manager.call_in_loop(manager.status)
                self._reply(200, {"max_worker_groups": status["max_worker_groups"], "workers_per_group": 1,
                                  "base_capabilities": parse_capabilities(manager.config.per_worker_capabilities),
                                  "worker_manager_id": status["worker_manager_id"], "mode": status["mode"]})
            elif action == "start_worker_group":
                group = manager.call_in_loop(manager.start_group)
                self._reply(200, {"status": "Worker group started", "worker_group_id": group.group_id,
                                  "worker_ids": [group.group_id]})
            elif action == "shutdown_worker_group":
                group_id = body.get("worker_group_id")
                if not isinstance(group_id, str) or not group_id:
                    self._reply(400, {"error": "worker_group_id is required"})
                    return
                manager.call_in_loop(lambda: manager.shutdown_group(group_id))
                self._reply(200, {"status": "Worker group shutdown"})
            else:
                self._reply(400, {"error": "Unknown action", "action": action,
                                  "valid_actions": ["get_worker_adapter_info", "start_worker_group",
                                                    "shutdown_worker_group"]})
        except GroupError as error:
            self._reply(HTTP_STATUS[error.kind], {"error": str(error)})
        except Exception as error:
            logger.exception("webhook action %s failed", action)
            self._reply(500, {"error": str(error)})
