"""Driving a worker manager through its webhook HTTP API, off the scheduler's loop.

HTTP calls block, so they run on one background thread; every answer comes back to the
loop with ``call_soon_threadsafe``. Each request has a timeout.
"""

import json
import logging
import queue
import threading
from typing import Any, Callable, Dict, Optional, Tuple

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 10.0
RETRY_SECONDS = 5.0


def post_action(url: str, body: Dict[str, Any], timeout: float = REQUEST_TIMEOUT_SECONDS) -> Tuple[int, Dict[str, Any]]:
    """POST a JSON action; return (HTTP status, decoded JSON reply). Raises OSError when unreachable."""
    # urllib.request pulls in http.client, email and ssl: imported by the first webhook call,
    # not by every scheduler's start-up.
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, raw = reply.status, reply.read(1 << 20)
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read(1 << 20)
    try:
        decoded = json.loads(raw.decode() or "{}")
    except ValueError:
        decoded = {"error": "reply is not JSON"}
    return status, decoded if isinstance(decoded, dict) else {"reply": decoded}


class WebhookWorker:
    """One thread that performs HTTP calls in order and reports results to the loop."""

    def __init__(self, call_soon_threadsafe: Callable[[Callable[[], None]], None]) -> None:
        self._post = call_soon_threadsafe
        self._jobs: "queue.Queue[Optional[Tuple[str, Dict[str, Any], Callable[[int, Dict[str, Any]], None]]]]" = \
            queue.Queue()
        self._thread = threading.Thread(target=self._run, name="scaler-webhooks", daemon=True)
        self._thread.start()

    def request(self, url: str, body: Dict[str, Any], done: Callable[[int, Dict[str, Any]], None]) -> None:
        self._jobs.put((url, body, done))

    def close(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            url, body, done = job
            try:
                status, reply = post_action(url, body)
            except (OSError, ValueError) as error:
                status, reply = 0, {"error": "cannot reach %s: %s" % (url, error)}
            self._post(lambda d=done, s=status, r=reply: d(s, r))
