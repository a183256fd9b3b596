"""The web dashboard (scaler_gui / scaler_ui): over HTTP, and in a real headless Chromium.

The browser tests drive Debian's ``chromium`` through the DevTools protocol (``tests/cdp.py``,
standard library only); they skip, saying why, only where no browser is installed
(``.ci/run`` installs it). Set ``SCALER_SCREENSHOT_DIR`` to keep the screenshot for the docs.
"""

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from cdp import Chromium, find_chromium
from e2e_support import closed_by_peer, exit_code_within, free_port_pair, subprocess_env

from scaler import Client, monitor
from scaler.config.commands import GUI
from scaler.config.loader import resolve_command_line
from scaler.gui import server as gui_server
from scaler.io.address import free_tcp_port, listen, parse_address
from scaler.io.loop import EventLoop
from scaler.scheduler.monitor import MonitorServer

STATIC = os.path.join(os.path.dirname(gui_server.__file__), "static")
TIMEOUT = 60.0


def slow_square(x):
    time.sleep(0.05)
    return x * x


def _get(url, token=None, timeout=10):
    request = urllib.request.Request(url, headers={"Authorization": "Bearer %s" % token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _start_gui(procs, monitor_address, *extra, env=None, module="scaler.gui", scheme="http"):
    port = free_tcp_port()
    if module == "scaler.gui":
        args = ["-m", module, monitor_address, "--gui-address", "127.0.0.1:%d" % port]
    else:
        args = ["-m", module, monitor_address, "--web-host", "127.0.0.1", "--web-port", str(port)]
    gui = procs.python(args + list(extra), "gui", env=env)
    gui.output.wait_for(r"dashboard of .* on %s://" % scheme, TIMEOUT)
    return gui, "%s://127.0.0.1:%d" % (scheme, port)


# --- HTTP, no browser -------------------------------------------------------------------------------

def test_static_page_loads_nothing_from_elsewhere():
    for name in os.listdir(STATIC):
        with open(os.path.join(STATIC, name), encoding="utf-8") as f:
            text = f.read()
        urls = [u for u in re.findall(r"[a-z]+://[^\s\"')]+", text) if u != "http://www.w3.org/2000/svg"]
        assert urls == [], (name, urls)
        assert "@import" not in text and "cdn" not in text.lower(), name


def test_gui_serves_page_json_and_events(make_combo, procs):
    port = free_port_pair()
    combo = make_combo(address="tcp://127.0.0.1:%d" % port, n_workers=2)
    monitor.wait_for(combo.monitor_address, lambda s: len(s["workers"]) == 2, timeout=TIMEOUT)
    gui, base = _start_gui(procs, combo.monitor_address)
    status, headers, body = _get(base + "/")
    assert status == 200 and b"<title>scaler dashboard</title>" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    config = json.loads(_get(base + "/api/config")[2])
    assert config["auth_required"] is False and config["monitor_address"] == combo.monitor_address

    def document():
        return json.loads(_get(base + "/api/status")[2])

    deadline = time.monotonic() + TIMEOUT
    while not (document()["connected"] and len(document()["status"]["workers"]) == 2):
        assert time.monotonic() < deadline, document()
        time.sleep(0.1)
    assert json.loads(_get(base + "/api/history")[2])["points"]
    assert _get(base + "/api/nothing")[0] == 404
    with urllib.request.urlopen(base + "/api/events", timeout=10) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        lines = [stream.readline() for _ in range(4)]
    assert lines[2] == b"event: status\n" and lines[3].startswith(b"data: {")
    assert len(json.loads(lines[3][len(b"data: "):])["status"]["workers"]) == 2
    gui.popen.terminate()
    assert exit_code_within(gui, TIMEOUT) == 0


def test_gui_requires_the_token_when_the_cluster_has_an_auth_key(make_combo, procs):
    port = free_port_pair()
    combo = make_combo(address="tcp://127.0.0.1:%d" % port, n_workers=1, auth_key="s3cret")
    gui, base = _start_gui(procs, combo.monitor_address, env=subprocess_env({"SCALER_AUTH_KEY": "s3cret"}),
                           module="scaler.entry_points.ui")
    assert json.loads(_get(base + "/api/config")[2])["auth_required"] is True
    assert _get(base + "/api/status")[0] == 401
    assert _get(base + "/api/status", token="wrong")[0] == 401
    assert _get(base + "/api/events")[0] == 401
    assert _get(base + "/")[0] == 200  # the page itself, which asks for the token
    deadline = time.monotonic() + TIMEOUT
    while True:
        document = json.loads(_get(base + "/api/status", token="s3cret")[2])
        if document["connected"] and len(document["status"]["workers"]) == 1:
            break
        assert time.monotonic() < deadline, document
        time.sleep(0.1)


def test_gui_address_must_be_host_and_port():
    from scaler.config.loader import ConfigError
    with pytest.raises(ConfigError, match="HOST:PORT"):
        resolve_command_line(GUI, ["tcp://127.0.0.1:1", "--gui-address", "nonsense"])
    config = resolve_command_line(GUI, ["tcp://127.0.0.1:1", "--gui-address", "[::1]:8080"]).config
    assert config.gui_address == "[::1]:8080"


# --- slow or silent peers, HTTPS ---------------------------------------------------------------------

def _in_process_dashboard(timeout, max_connections=gui_server.MAX_CONNECTIONS):
    """The dashboard served from this process (its monitor address leads nowhere: the HTTP
    side works without it), on a free loopback port, with a shorter request timeout."""
    config = resolve_command_line(GUI, ["tcp://127.0.0.1:%d" % free_tcp_port(), "--gui-address", "127.0.0.1:0"]
                                  ).config
    sock = gui_server.listen_http(config.gui_address)
    server, thread = gui_server.serve(config, sock)
    server.request_timeout, server.max_connections = timeout, max_connections
    return server, thread, sock.getsockname()[1]


def test_silent_connections_are_dropped():
    """A peer that connects and sends nothing is dropped after the request timeout."""
    server, thread, port = _in_process_dashboard(1.0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as silent:
            assert closed_by_peer(silent, TIMEOUT)
        assert _get("http://127.0.0.1:%d/api/config" % port)[0] == 200
    finally:
        gui_server.stop(server, thread)


def test_open_connections_are_bounded():
    """Past ``max_connections`` open ones a new connection is closed at once (long before the
    60 s timeout), so silent peers cannot pile up threads without end; one leaving makes room."""
    server, thread, port = _in_process_dashboard(60.0, 4)
    held = []
    try:
        for _ in range(4):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT))
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as extra:
            assert closed_by_peer(extra, TIMEOUT)
        held.pop().close()
        deadline = time.monotonic() + TIMEOUT
        while server.open_connections > 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert _get("http://127.0.0.1:%d/api/config" % port)[0] == 200
    finally:
        for sock in held:
            sock.close()
        gui_server.stop(server, thread)


def test_a_partial_request_is_dropped_after_the_timeout():
    server, thread, port = _in_process_dashboard(1.0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /api/config HTTP/1.1\r\nHost: x\r\n")  # no blank line: never complete
            assert closed_by_peer(sock, TIMEOUT)
    finally:
        gui_server.stop(server, thread)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from tls_support import OPENSSL, make_pki
    if OPENSSL is None:
        pytest.skip("the openssl command is needed to make test certificates")
    return make_pki(tmp_path_factory.mktemp("pki"))


def _get_tls(url, ca, timeout=10):
    context = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return response.status, dict(response.headers), response.read()


def test_gui_serves_https_with_tls_cert_and_key(make_combo, procs, pki):
    port = free_port_pair()
    combo = make_combo(address="tcp://127.0.0.1:%d" % port, n_workers=1)
    gui, base = _start_gui(procs, combo.monitor_address, "--tls-cert", pki.cert, "--tls-key", pki.key, scheme="https")
    # A peer that connects and never starts the handshake holds nobody else up.
    stalled = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=TIMEOUT)
    try:
        status, headers, body = _get_tls(base + "/", pki.ca)
        assert status == 200 and b"<title>scaler dashboard</title>" in body
        deadline = time.monotonic() + TIMEOUT
        while True:
            document = json.loads(_get_tls(base + "/api/status", pki.ca)[2])
            if document["connected"] and document["status"] and len(document["status"]["workers"]) == 1:
                break
            assert time.monotonic() < deadline, document
            time.sleep(0.1)
        with pytest.raises(urllib.error.URLError) as refused:  # checked against another CA: refused
            _get_tls(base + "/", pki.other_ca)
        assert isinstance(refused.value.reason, ssl.SSLError)
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            _get(base.replace("https://", "http://") + "/api/config", timeout=5)  # no plain HTTP on it
    finally:
        stalled.close()
    gui.popen.terminate()
    assert exit_code_within(gui, TIMEOUT) == 0


def test_gui_tls_flags_are_checked(pki, tmp_path):
    from scaler.config.loader import ConfigError
    with pytest.raises(ConfigError, match="together"):
        resolve_command_line(GUI, ["tcp://127.0.0.1:1", "--tls-cert", pki.cert])
    with pytest.raises(ConfigError, match="tls_cert|certificate"):
        resolve_command_line(GUI, ["tcp://127.0.0.1:1", "--tls-cert", str(tmp_path / "missing.pem"),
                                   "--tls-key", pki.key])
    config = resolve_command_line(GUI, ["tcp://127.0.0.1:1", "--tls-cert", pki.cert, "--tls-key", pki.key]).config
    assert (config.tls_cert, config.tls_key) == (pki.cert, pki.key)
    from scaler.config.commands import WEBUI
    config = resolve_command_line(WEBUI, ["tcp://127.0.0.1:1", "--tls-cert", pki.cert, "--tls-key", pki.key]).config
    assert config.tls_cert == pki.cert


# --- in Chromium --------------------------------------------------------------------------------------

@pytest.fixture
def browser(tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium/google-chrome on PATH (.ci/run installs Debian's chromium package)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    chromium = Chromium(binary, str(profile))
    page = chromium.page()
    try:
        yield page
    finally:
        page.close()
        chromium.close()


def _text(page, element_id):
    return page.evaluate("(document.getElementById(%r) || {}).textContent" % element_id)


def test_dashboard_in_chromium_matches_the_cluster_under_load(make_combo, procs, browser, tmp_path):
    port = free_port_pair()
    combo = make_combo(address="tcp://127.0.0.1:%d" % port, n_workers=2)
    monitor.wait_for(combo.monitor_address, lambda s: len(s["workers"]) == 2, timeout=TIMEOUT)
    gui, base = _start_gui(procs, combo.monitor_address)
    browser.call("Page.navigate", {"url": base + "/"})
    browser.wait_for("document.getElementById('worker-count').textContent === '2'", TIMEOUT, "2 workers on the page")
    assert browser.evaluate("document.getElementById('auth').hidden") is True

    count = 200
    with Client(combo.get_address()) as client:
        futures = [client.submit(slow_square, i) for i in range(count)]
        # under load: the page shows tasks in the scheduler and running on the workers
        browser.wait_for("Number(document.getElementById('task-total').textContent) > 0", TIMEOUT,
                         "tasks in flight on the page")
        browser.wait_for("Number(document.getElementById('total-submitted').textContent) === %d" % count,
                         TIMEOUT, "every submitted task counted")
        live = monitor.snapshot(combo.monitor_address)
        assert _text(browser, "worker-count") == str(len(live["workers"]))
        assert [f.result(timeout=TIMEOUT) for f in futures] == [i * i for i in range(count)]
        browser.wait_for("document.getElementById('total-finished').textContent === '%d'" % count, TIMEOUT,
                         "every finished task counted")
        done = browser.evaluate("Array.from(document.querySelectorAll('#workers-body tr'))"
                                ".map(r => Number(r.children[9].textContent)).reduce((a, b) => a + b, 0)")
        browser.wait_for("document.getElementById('task-total').textContent === '0'", TIMEOUT, "an empty scheduler")
    final = monitor.snapshot(combo.monitor_address)
    assert final["totals"]["finished"] == count
    assert _text(browser, "total-finished") == str(final["totals"]["finished"])
    assert done <= count
    assert browser.evaluate("document.querySelectorAll('#workers-body tr').length") == 2
    assert browser.evaluate("document.querySelectorAll('#chart-throughput polyline').length") == 2
    assert browser.errors() == []
    png = browser.screenshot(str(tmp_path / "dashboard.png"))
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10000
    target = os.environ.get("SCALER_SCREENSHOT_DIR")
    if target:
        shutil.copy(str(tmp_path / "dashboard.png"), os.path.join(target, "dashboard.png"))


def test_dashboard_in_chromium_over_https(make_combo, procs, browser, pki):
    """The page, its script and its event stream over HTTPS (the browser told to accept the
    test CA's certificate, which its own store does not hold): nothing falls back to http."""
    port = free_port_pair()
    combo = make_combo(address="tcp://127.0.0.1:%d" % port, n_workers=1)
    gui, base = _start_gui(procs, combo.monitor_address, "--tls-cert", pki.cert, "--tls-key", pki.key, scheme="https")
    browser.call("Security.setIgnoreCertificateErrors", {"ignore": True})
    browser.call("Page.navigate", {"url": base + "/"})
    browser.wait_for("document.getElementById('worker-count').textContent === '1'", TIMEOUT, "the worker shown")
    assert browser.evaluate("location.protocol") == "https:"
    with Client(combo.get_address()) as client:
        assert client.map(slow_square, range(5)) == [i * i for i in range(5)]
    browser.wait_for("document.getElementById('total-finished').textContent === '5'", TIMEOUT,
                     "the finished tasks counted through the event stream")
    assert browser.errors() == []


def test_dashboard_in_chromium_asks_for_the_token(make_combo, procs, browser):
    port = free_port_pair()
    combo = make_combo(address="tcp://127.0.0.1:%d" % port, n_workers=1, auth_key="s3cret")
    gui, base = _start_gui(procs, combo.monitor_address, "--auth-key", "s3cret")
    browser.call("Page.navigate", {"url": base + "/"})
    browser.wait_for("!document.getElementById('auth').hidden", TIMEOUT, "the token form")
    assert browser.evaluate("document.getElementById('main').hidden") is True
    submit = ("document.getElementById('token-input').value = %r;"
              "document.getElementById('token-submit').click(); true")
    browser.evaluate(submit % "wrong")
    browser.wait_for("document.getElementById('auth-error').textContent.indexOf('not accepted') >= 0", TIMEOUT,
                     "the wrong token refused")
    browser.evaluate(submit % "s3cret")
    browser.wait_for("document.getElementById('worker-count').textContent === '1'", TIMEOUT, "the worker shown")
    assert browser.evaluate("document.getElementById('auth').hidden") is True
    errors = [e for e in browser.errors() if "401" not in e]  # the refused token's request is logged by the browser
    assert errors == []


def _synthetic_status(workers, sequence):
    rows = [{"id": "%032x" % i, "name": "worker-%03d" % i, "host": "10.0.%d.%d" % (i // 250, i % 250), "pid": 1000 + i,
             "manager": "m", "group": "", "capabilities": "", "queue_size": 1000,
             "agent_cpu": 1.0, "agent_rss": 30 << 20, "processor_pid": 5000 + i,
             "processor_cpu": float((i * 7 + sequence * 13) % 100), "processor_rss": 40 << 20, "assigned": 3,
             "queued": 2, "running": 1, "done": sequence * 10 + i, "suspended": 0, "heartbeat_age": 0.5,
             "connected_for": 10.0, "idle_for": None, "draining": False} for i in range(workers)]
    return {"version": 1, "time": time.time(), "scheduler": {"pid": 1, "cpu": 5.0, "rss": 50 << 20, "uptime": 10.0},
            "tasks": {"waiting": 0, "queued": 100, "assigned": 3 * workers, "moving": 0, "cancelling": 0,
                      "total": 100 + 3 * workers, "running": workers},
            "totals": {"submitted": 1000 * sequence, "finished": 900 * sequence, "failed": 0, "cancelled": 0},
            "rates": {"submitted": 1000.0, "finished": 900.0, "failed": 0.0, "cancelled": 0.0},
            "workers": rows, "clients": [], "managers": [],
            "object_storage": {"address": "tcp://x:1", "in_process": True, "objects": 3, "bytes": 10, "limit": 0},
            "scaling": {"events": [], "allocate": "even_load", "scaling": "no"}, "waiting_for_capabilities": []}


def test_dashboard_stays_responsive_with_200_workers(procs, browser):
    """A monitor publishing a synthetic 200-worker status four times a second."""
    loop = EventLoop()
    address = "tcp://127.0.0.1:%d" % free_tcp_port()
    counter = [0]

    def build():
        counter[0] += 1
        return _synthetic_status(200, counter[0])

    server = MonitorServer(loop, listen(parse_address(address)), address, None, build, 0.25)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        gui, base = _start_gui(procs, address, "--broadcast-interval-seconds", "0.1")
        browser.call("Page.navigate", {"url": base + "/"})
        browser.wait_for("document.querySelectorAll('#workers-body tr').length === 200", TIMEOUT, "200 worker rows")
        renders = browser.evaluate("window.scalerDashboard.renders")
        browser.wait_for("window.scalerDashboard.renders >= %d" % (renders + 5), TIMEOUT, "five more updates")
        render_ms = browser.evaluate("window.scalerDashboard.lastRenderMs")
        sys.stdout.write("200-worker render: %.1f ms\n" % render_ms)
        assert browser.evaluate("document.getElementById('worker-count').textContent") == "200"
        assert browser.evaluate("document.getElementById('heat').height") >= 200
        assert browser.errors() == []
    finally:
        loop.call_soon_threadsafe(lambda: (server.close(), loop.stop()))
        thread.join(10)
        loop.close()
