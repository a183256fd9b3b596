"""A headless Chromium driven over the Chrome DevTools Protocol, with the standard library only.

- :class:`WebSocket`: the client side of RFC 6455 (masked frames, fragments, ping/pong) on a
  blocking socket with a timeout.
- :class:`DevTools`: JSON-RPC over that socket; keeps every event it reads, so the test can
  ask afterwards for console errors and uncaught exceptions.
- :class:`Chromium`: starts ``chromium --headless`` in its own process group with a private
  profile, finds its DevTools port (``DevToolsActivePort``), and kills and reaps the whole
  group on :meth:`Chromium.close`.

Every wait has a deadline. :func:`find_chromium` returns None when no browser is installed
(the tests then skip, saying so).
"""

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from typing import Any, Dict, List, Optional


def find_chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class WebSocketError(Exception):
    pass


class WebSocket:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        assert url.startswith("ws://"), url
        rest = url[len("ws://"):]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = ("GET /%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, hostport, key))
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WebSocketError("connection closed during the websocket handshake")
            response += chunk
        head, _, self._buffer = response.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise WebSocketError("websocket handshake refused: %r" % head[:200])

    def send_text(self, text: str) -> None:
        payload = text.encode("utf-8")
        header = bytearray([0x81])
        length = len(payload)
        if length < 126:
            header.append(0x80 | length)
        elif length < 1 << 16:
            header.append(0x80 | 126)
            header += struct.pack("!H", length)
        else:
            header.append(0x80 | 127)
            header += struct.pack("!Q", length)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if length < 4096 else _mask(payload, mask)
        self.sock.sendall(bytes(header) + mask + masked)

    def _read_exact(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buffer)))
            if not chunk:
                raise WebSocketError("websocket closed by the browser")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def recv_text(self) -> str:
        parts: List[bytes] = []
        while True:
            first, second = self._read_exact(2)
            opcode = first & 0x0F
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._read_exact(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._read_exact(8))[0]
            mask = self._read_exact(4) if second & 0x80 else None
            payload = self._read_exact(length)
            if mask:
                payload = _mask(payload, mask)
            if opcode == 0x9:  # ping
                self._send_control(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                raise WebSocketError("websocket closed by the browser")
            parts.append(payload)
            if first & 0x80:
                return b"".join(parts).decode("utf-8")

    def _send_control(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + _mask(payload, mask))

    def close(self) -> None:
        try:
            self._send_control(0x8, b"")
        except OSError:
            pass
        self.sock.close()


def _mask(data: bytes, mask: bytes) -> bytes:
    repeated = (mask * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(data), "big")


class DevTools:
    """One page target."""

    def __init__(self, ws_url: str, timeout: float = 30.0) -> None:
        self.ws = WebSocket(ws_url, timeout)
        self.timeout = timeout
        self.events: List[Dict[str, Any]] = []
        self._next_id = 0

    def call(self, method: str, params: Optional[Dict[str, Any]] = None, timeout: Optional[float] = None) -> Any:
        self._next_id += 1
        call_id = self._next_id
        self.ws.send_text(json.dumps({"id": call_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            self.ws.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                message = json.loads(self.ws.recv_text())
            except socket.timeout:
                raise AssertionError("no answer to %s from the browser within %.0fs" % (method, timeout or self.timeout))
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError("%s failed: %s" % (method, message["error"]))
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError("evaluating %r threw: %s" % (expression, result["exceptionDetails"]))
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy; AssertionError naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except AssertionError as exc:  # e.g. the page is still loading: its elements do not exist yet
                value = exc
            if value and not isinstance(value, AssertionError):
                return value
            time.sleep(0.1)
        raise AssertionError("timed out after %.0fs waiting for %s (%s was %r)" % (timeout, what or expression,
                                                                                     expression, value))

    def errors(self) -> List[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        self.call("Runtime.evaluate", {"expression": "0"})  # drain what arrived meanwhile
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                found.append("exception: %s" % (details.get("exception", {}).get("description") or details.get("text")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console.%s: %s" % (params["type"], " ".join(
                    str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", ()))))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append("log: %s %s" % (entry.get("text"), entry.get("url", "")))
        return found

    def screenshot(self, path: str, width: int = 1400, height: int = 1500) -> bytes:
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False})
        time.sleep(0.3)  # one frame for the layout to settle at the new size
        data = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"}, timeout=60)["data"])
        with open(path, "wb") as f:
            f.write(data)
        return data

    def close(self) -> None:
        self.ws.close()


class Chromium:
    def __init__(self, binary: str, profile_dir: str, timeout: float = 60.0) -> None:
        self.profile_dir = profile_dir
        args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                "--user-data-dir=%s" % profile_dir, "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--window-size=1400,1000", "about:blank"]
        self._log_file = open(os.path.join(profile_dir, "chromium.log"), "wb")
        self.popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=self._log_file, start_new_session=True)
        port_file = os.path.join(profile_dir, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        self.port = 0
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError("chromium exited with %s: %s" % (self.popen.returncode, self.log()[-2000:]))
            try:
                with open(port_file) as f:
                    first = f.readline().strip()
                if first.isdigit():
                    self.port = int(first)
                    break
            except OSError:
                pass
            time.sleep(0.05)
        if not self.port:
            self.close()
            raise AssertionError("chromium did not open its DevTools port within %.0fs" % timeout)

    def log(self) -> str:
        try:
            with open(os.path.join(self.profile_dir, "chromium.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def page(self, timeout: float = 30.0) -> DevTools:
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % self.port, timeout=10) as response:
                targets = json.load(response)
            pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
            if pages:
                break
            if time.monotonic() > deadline:
                raise AssertionError("chromium has no page target")
            time.sleep(0.1)
        devtools = DevTools(pages[0]["webSocketDebuggerUrl"], timeout)
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            devtools.call(domain)
        return devtools

    def close(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # helpers (zygote, renderers) of the group
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log_file.close()
