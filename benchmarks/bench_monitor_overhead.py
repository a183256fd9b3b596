"""What watching a cluster costs: map throughput with nobody watching, and with the web
dashboard and three ``scaler_top`` attached, in the same run (alternated, best of N).

    python3 benchmarks/bench_monitor_overhead.py [--tasks 20000] [--rounds 3]

``scaler_top`` runs in detached ``tmux`` sessions (a real terminal); without tmux, three
``scaler.monitor.Follower`` subscriptions stand in for them, and the table says so.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaler import Client, SchedulerClusterCombo, monitor  # noqa: E402
from scaler.io.address import free_tcp_port  # noqa: E402


def noop(x):
    return x


def map_rate(client, n):
    started = time.perf_counter()
    client.map(noop, range(n))
    return n / (time.perf_counter() - started)


class Watchers:
    """The dashboard (a scaler_gui process) and three scaler_top."""

    def __init__(self, monitor_address):
        self.gui_port = free_tcp_port()
        self.gui = subprocess.Popen([sys.executable, "-m", "scaler.gui", monitor_address, "--gui-address",
                                     "127.0.0.1:%d" % self.gui_port], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        self.tmux = shutil.which("tmux") is not None
        self.sessions = []
        self.followers = []
        for _ in range(3):
            if self.tmux:
                name = "scaler-bench-%s" % uuid.uuid4().hex[:8]
                subprocess.run(["tmux", "-L", name, "new-session", "-d", "-x", "160", "-y", "40",
                                "%s -m scaler.top %s" % (sys.executable, monitor_address)], check=True)
                self.sessions.append(name)
            else:
                self.followers.append(monitor.Follower(monitor_address).start())
        # an open page: keep the SSE stream of the dashboard busy too
        self.page = None
        deadline = time.monotonic() + 30
        while self.page is None and time.monotonic() < deadline:
            try:
                import urllib.request
                self.page = urllib.request.urlopen("http://127.0.0.1:%d/api/events" % self.gui_port, timeout=30)
            except OSError:
                time.sleep(0.2)

    def close(self):
        if self.page is not None:
            self.page.close()
        for name in self.sessions:
            subprocess.run(["tmux", "-L", name, "kill-server"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for follower in self.followers:
            follower.stop()
        self.gui.terminate()
        self.gui.wait(30)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with SchedulerClusterCombo(n_workers=2, logging_level="WARNING") as combo:
        with Client(combo.get_address()) as client:
            map_rate(client, 2000)  # warm up
            plain, watched = [], []
            for _ in range(args.rounds):
                plain.append(map_rate(client, args.tasks))
                watchers = Watchers(combo.monitor_address)
                try:
                    time.sleep(1.0)  # every watcher connected and drawing
                    watched.append(map_rate(client, args.tasks))
                finally:
                    watchers.close()
    best_plain, best_watched = max(plain), max(watched)
    tops = "3 scaler_top (tmux)" if shutil.which("tmux") else "3 Follower subscriptions (no tmux)"
    print("map of %d no-op tasks, 2 workers, best of %d rounds" % (args.tasks, args.rounds))
    print("%-52s %12s" % ("", "tasks/s"))
    print("%-52s %12s" % ("nobody watching", "{:,.0f}".format(best_plain)))
    print("%-52s %12s" % ("dashboard (page open) + " + tops, "{:,.0f}".format(best_watched)))
    print("%-52s %11.1f%%" % ("change", 100.0 * (best_watched - best_plain) / best_plain))
    return 0


if __name__ == "__main__":
    sys.exit(main())
