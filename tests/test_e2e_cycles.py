"""100 start/stop cycles of SchedulerClusterCombo in one process leak nothing.

No file descriptor, thread, child process (zombies included) or listening port survives a
cycle: measured after two warm-up cycles (imports and lazily made singletons), compared
after the last.
"""

import gc
import os
import sys
import threading

import pytest

from scaler import Client, SchedulerClusterCombo

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

CYCLES = 100


def add(a, b):
    return a + b


def open_fds():
    return sorted(os.listdir("/proc/self/fd"))


def children():
    me = str(os.getpid())
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            found.append((int(pid), fields[0]))
    return found


def listening_ports():
    """Ports in LISTEN state owned by sockets of this process (by inode)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def snapshot():
    gc.collect()
    return {"fds": len(open_fds()), "threads": sorted(t.name for t in threading.enumerate()),
            "children": children(), "listening": listening_ports()}


def test_start_stop_cycles_leave_nothing_behind():
    baseline = None
    for cycle in range(CYCLES):
        with SchedulerClusterCombo(n_workers=1, logging_level="WARNING") as combo:
            with Client(combo.get_address()) as client:
                assert client.submit(add, cycle, 1).result(timeout=60) == cycle + 1
        if cycle == 1:
            baseline = snapshot()
    after = snapshot()
    assert after["children"] == baseline["children"], "child processes left: %r" % after["children"]
    assert after["listening"] == baseline["listening"], "listening ports left: %r" % after["listening"]
    assert after["threads"] == baseline["threads"], "threads left: %r" % after["threads"]
    assert after["fds"] == baseline["fds"], "file descriptors: %d after %d cycles, %d after 2" % (
        after["fds"], CYCLES, baseline["fds"])
