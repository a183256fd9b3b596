"""scaler_top for real: a curses screen in tmux, driven with send-keys, read with capture-pane."""

import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from e2e_support import REPO_ROOT, subprocess_env
from scaler import Client
from scaler.io.address import free_tcp_port

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="e2e tests need Linux"),
              pytest.mark.skipif(shutil.which("tmux") is None,
                                 reason="tmux is not installed (.ci/run installs it with apt-get)")]

TIMEOUT = 60


def slow(x):
    time.sleep(0.02)
    return x


class Tmux:
    """One detached tmux session on a private server socket, killed at the end."""

    def __init__(self, command, width=160, height=40):
        self.socket = "scaler-test-%s" % uuid.uuid4().hex[:8]
        self.session = "top"
        env = subprocess_env()
        self._run("new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height),
                  " ".join(command), env=env)

    def _run(self, *args, env=None):
        return subprocess.run(["tmux", "-L", self.socket] + list(args), check=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=30, env=env, cwd=REPO_ROOT).stdout.decode()

    def screen(self):
        return self._run("capture-pane", "-p", "-t", self.session)

    def keys(self, *keys):
        self._run("send-keys", "-t", self.session, *keys)

    def resize(self, width, height):
        self._run("resize-window", "-t", self.session, "-x", str(width), "-y", str(height))

    def wait_for(self, pattern, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if re.search(pattern, text, re.M):
                return text
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %r on the screen:\n%s" % (pattern, text))
            time.sleep(0.1)

    def alive(self):
        return subprocess.run(["tmux", "-L", self.socket, "has-session", "-t", self.session],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    def kill(self):
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)


@pytest.fixture
def tmux_top():
    sessions = []

    def start(monitor_address):
        session = Tmux([sys.executable, "-m", "scaler.top", monitor_address, "--interval", "0.2"])
        sessions.append(session)
        return session

    try:
        yield start
    finally:
        for session in sessions:
            session.kill()


def row(screen, name):
    for line in screen.splitlines():
        if line.startswith(name):
            return line
    raise AssertionError("no row for %s:\n%s" % (name, screen))


def done_column(screen, name):
    # NAME HOST PID CPU% MEM AGT% AGTMEM QUEUED RUN DONE, counted from the right of PID
    fields = row(screen, name)[24:].split()
    return int(fields[8])


def worker_names(monitor_address, count):
    from scaler import monitor
    status = monitor.wait_for(monitor_address, lambda s: len(s["workers"]) >= count, timeout=TIMEOUT)
    return sorted(w["name"][:20] for w in status["workers"])  # as the 24-wide NAME column shows them


def test_top_lists_the_workers_and_follows_the_work(make_combo, tmux_top, tmp_path):
    combo = make_combo(n_workers=2)
    monitor_address = combo.monitor_address
    alpha, beta = worker_names(monitor_address, 2)
    top = tmux_top(monitor_address)
    screen = top.wait_for(r"^" + re.escape(alpha))
    assert re.search(r"^" + re.escape(beta), screen, re.M) and "NAME" in screen
    before = done_column(screen, alpha) + done_column(screen, beta)
    with Client(combo.get_address()) as client:
        assert client.map(slow, range(200)) == list(range(200))
    deadline = time.monotonic() + TIMEOUT
    while done_column(top.screen(), alpha) + done_column(top.screen(), beta) < before + 200:
        assert time.monotonic() < deadline, top.screen()
        time.sleep(0.2)
    # sortable by column: "n" sorts by name (A to Z), the key list is on screen
    top.keys("n")
    time.sleep(0.5)
    screen = top.screen()
    rows = [line.split()[0] for line in screen.splitlines() if line.startswith((alpha, beta))]
    assert rows == [alpha, beta], screen
    assert "n" in screen.splitlines()[-1] or re.search(r"sort", screen, re.I), screen  # the keys are shown
    # it survives a resize, and quits on q
    top.resize(90, 20)
    top.wait_for(r"^" + re.escape(alpha))
    top.resize(160, 40)
    top.wait_for(r"^" + re.escape(beta))
    top.keys("q")
    deadline = time.monotonic() + TIMEOUT
    while top.alive():
        assert time.monotonic() < deadline, "scaler_top did not quit on q"
        time.sleep(0.1)


def test_top_says_disconnected_and_reconnects(make_combo, tmux_top):
    from scaler import SchedulerClusterCombo
    # ports below the ephemeral range (the reconnecting scaler_top's own ports come from it)
    address = "tcp://127.0.0.1:%d" % free_tcp_port("127.0.0.1", count=3)
    combo = SchedulerClusterCombo(address=address, n_workers=1, logging_level="WARNING")
    monitor_address = combo.monitor_address
    (name,) = worker_names(monitor_address, 1)
    top = tmux_top(monitor_address)
    first = top.wait_for(r"^" + re.escape(name))
    pid = row(first, name)[24:].split()[1]
    combo.shutdown()
    top.wait_for(r"(?i)disconnected|unreachable|refused|lost")
    again = make_combo(address=address, monitor_address=monitor_address, n_workers=1)
    assert again.get_address() == address
    # the same name comes back, from a new worker process
    screen = top.wait_for(r"^" + re.escape(name) + r".*")
    deadline = time.monotonic() + TIMEOUT
    while True:  # the row may come and go while the old worker's entry is replaced
        current = top.screen()
        line = next((text for text in current.splitlines() if text.startswith(name)), None)
        if line is not None and line[24:].split()[1:2] not in ([pid], []):
            break
        assert time.monotonic() < deadline, current
        time.sleep(0.2)
