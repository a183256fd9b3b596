"""Without a key, a scheduler or object storage server listening beyond loopback says so, once, loudly.

The processes bind ``0.0.0.0`` for a few seconds, with no worker attached (nobody could run
anything through them), and are killed at the end of each test.
"""

import os
import re
import sys

import pytest

from e2e_support import exit_code_within, free_port_pair
from scaler.io.address import is_loopback, parse_address

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="e2e tests need Linux")

TIMEOUT = 30
RISK = re.compile(r"anyone who can connect can run code on the workers.*--auth-key-file")


@pytest.mark.parametrize("address,loopback", [
    ("tcp://127.0.0.1:1", True), ("tcp://127.8.9.10:1", True), ("tcp://[::1]:1", True),
    ("tcp://localhost:1", True), ("ipc:///tmp/x.sock", True),
    ("tcp://0.0.0.0:1", False), ("tcp://*:1", False), ("tcp://[::]:1", False), ("tcp://10.1.2.3:1", False),
    ("tcp://192.168.0.1:1", False), ("tcp://[fe80::1]:1", False),
])
def test_is_loopback(address, loopback):
    assert is_loopback(parse_address(address)) is loopback


def key_file(tmp_path):
    path = tmp_path / "key"
    path.write_text("k3y\n")
    os.chmod(str(path), 0o600)
    return str(path)


def start(procs, module, address, *extra):
    child = procs.python(["-m", module, address, *extra], module)
    child.output.wait_for(r"listening on", TIMEOUT)
    return child


def stop(child):
    child.popen.send_signal(15)
    assert exit_code_within(child, TIMEOUT) == 0, child.output.text()
    child.output.join(TIMEOUT)
    return child.output.text()


def warnings_in(text):
    return [line for line in text.splitlines() if RISK.search(line)]


@pytest.mark.parametrize("host", ["0.0.0.0", "*"])
def test_scheduler_on_all_interfaces_without_a_key_warns_once(procs, host):
    port = free_port_pair()
    text = stop(start(procs, "scaler.scheduler", "tcp://%s:%d" % (host, port)))
    lines = warnings_in(text)
    assert len(lines) == 1, text
    assert "WARNING" in lines[0] and "0.0.0.0:%d" % port in lines[0] and "no auth key" in lines[0], lines[0]


def test_object_storage_on_all_interfaces_without_a_key_warns_once(procs):
    port = free_port_pair()
    text = stop(start(procs, "scaler.object_storage", "tcp://0.0.0.0:%d" % port))
    lines = warnings_in(text)
    assert len(lines) == 1, text
    assert "WARNING" in lines[0] and "0.0.0.0:%d" % port in lines[0], lines[0]


@pytest.mark.parametrize("module", ["scaler.scheduler", "scaler.object_storage"])
def test_loopback_or_a_key_means_no_warning(procs, tmp_path, module):
    port = free_port_pair()
    quiet = [start(procs, module, "tcp://127.0.0.1:%d" % port)]
    port = free_port_pair()
    quiet.append(start(procs, module, "tcp://0.0.0.0:%d" % port, "--auth-key-file", key_file(tmp_path)))
    for child in quiet:
        text = stop(child)
        assert not warnings_in(text) and "auth key" not in text, text
