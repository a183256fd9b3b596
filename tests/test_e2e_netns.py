"""Many hosts: a scheduler and two worker hosts in separate network namespaces.

Three namespaces joined by veth pairs (``ip netns``, ``ip link``): the scheduler and the
client in the first, one worker host in each of the others. Tasks run on both hosts; then
one host is cut off (its link set down): its tasks run again on the other host and the
results are complete and correct; when the link comes back, the host rejoins and takes
tasks again. Linux and root only (skipped elsewhere, saying why).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest

from e2e_support import REPO_ROOT, exit_code_within, subprocess_env

TIMEOUT = 180


def _why_not() -> str:
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    probe = "scalerprobe%s" % uuid.uuid4().hex[:6]
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return "cannot create a network namespace here: %s" % made.stderr.strip()
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ""


pytestmark = pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "runs")


def ip(*args, ns=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip"] + list(args)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, "%s: %s" % (" ".join(cmd), done.stderr)


class Hosts:
    """ns_s (10.77.1.1, 10.77.2.1) -- veth -- ns_a (10.77.1.2); ns_s -- veth -- ns_b (10.77.2.2)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.s, self.a, self.b = ("sc%s%s" % (tag, n) for n in "sab")
        self.made = []
        for ns in (self.s, self.a, self.b):
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("link", "set", "lo", "up", ns=ns)
        for host, net, peer in ((self.a, 1, "va" + tag), (self.b, 2, "vb" + tag)):
            side = "s%d%s" % (net, tag)
            ip("link", "add", side, "type", "veth", "peer", "name", peer)
            ip("link", "set", side, "netns", self.s)
            ip("link", "set", peer, "netns", host)
            ip("addr", "add", "10.77.%d.1/24" % net, "dev", side, ns=self.s)
            ip("addr", "add", "10.77.%d.2/24" % net, "dev", peer, ns=host)
            ip("link", "set", side, "up", ns=self.s)
            ip("link", "set", peer, "up", ns=host)
        self.link_a = "va" + tag

    def netns_id(self, ns):
        out = subprocess.run(["ip", "netns", "exec", ns, "readlink", "/proc/self/ns/net"], capture_output=True,
                             text=True, timeout=30)
        return out.stdout.strip()

    def destroy(self):
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


CLIENT = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from scaler import Client

    def where(x, delay):
        time.sleep(delay)
        return os.readlink("/proc/self/ns/net"), x * x

    address, host_a, link_a, id_a, id_b = sys.argv[1:6]
    report = {}
    with Client(address, timeout_seconds=120) as client:
        first = client.map(where, range(40), [0.05] * 40)
        report["phase1_hosts"] = sorted(set(h for h, _ in first))
        futures = client.map_futures(where, range(300), [0.05] * 300)
        time.sleep(1.5)
        subprocess.run(["ip", "netns", "exec", host_a, "ip", "link", "set", link_a, "down"], check=True)
        cut_at = time.monotonic()
        results = [f.result(timeout=150) for f in futures]
        report["phase2_ok"] = [v for _, v in results] == [x * x for x in range(300)]
        report["phase2_seconds_after_cut"] = round(time.monotonic() - cut_at, 1)
        after_cut = client.map(where, range(40), [0.01] * 40)
        report["after_cut_hosts"] = sorted(set(h for h, _ in after_cut))
        subprocess.run(["ip", "netns", "exec", host_a, "ip", "link", "set", link_a, "up"], check=True)
        deadline = time.monotonic() + 90
        rejoined = False
        while time.monotonic() < deadline and not rejoined:
            batch = client.map(where, range(20), [0.05] * 20)
            rejoined = any(h == id_a for h, _ in batch)
            time.sleep(0.5)
        report["rejoined"] = rejoined
    print("REPORT " + json.dumps(report), flush=True)
""")


def test_a_cut_off_host_loses_nothing_and_rejoins(procs, tmp_path):
    hosts = Hosts()
    try:
        env = subprocess_env()
        port = 18516
        address = "tcp://0.0.0.0:%d" % port
        in_ns = lambda ns, args, name: procs.start(["ip", "netns", "exec", ns, sys.executable] + args, name, env=env)
        scheduler = in_ns(hosts.s, ["-m", "scaler.scheduler", address, "--worker-timeout-seconds", "5",
                                    "-ll", "INFO"], "scheduler")
        for ns, net in ((hosts.a, 1), (hosts.b, 2)):
            in_ns(ns, ["-m", "scaler.cluster", "tcp://10.77.%d.1:%d" % (net, port), "-n", "1", "-hi", "1",
                       "-ll", "INFO"], "cluster-" + ns)
        script = tmp_path / "netns_client.py"
        script.write_text(CLIENT)
        id_a, id_b = hosts.netns_id(hosts.a), hosts.netns_id(hosts.b)
        client = in_ns(hosts.s, [str(script), "tcp://127.0.0.1:%d" % port, hosts.a, hosts.link_a, id_a, id_b],
                       "client")
        code = exit_code_within(client, TIMEOUT)
        client.output.join(10)
        text = client.output.text()
        assert code == 0, text + "\n--- scheduler ---\n" + scheduler.output.text()
        report = json.loads(text.split("REPORT ", 1)[1].splitlines()[0])
        assert report["phase1_hosts"] == sorted([id_a, id_b]), report  # both hosts ran tasks
        assert report["phase2_ok"], report  # nothing lost or wrong across the cut
        assert report["after_cut_hosts"] == [id_b], report  # only the reachable host
        assert report["rejoined"], report  # the host came back when its link did
    finally:
        procs.cleanup()
        hosts.destroy()
