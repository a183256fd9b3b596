"""Soak: mixed work for a while with random worker and processor kills; nothing lost.

    python benchmarks/soak.py --minutes 30        # the figures in docs/failures.rst
    python benchmarks/soak.py --minutes 0.5       # what .ci/run runs

A SchedulerClusterCombo with 3 workers (a fixed pool restarts a killed worker) runs, in a
loop: maps of short tasks, tasks with 200 KB arguments, send_object + tasks reading it, a
task graph, nested tasks (fib), and tasks that fail on purpose. A killer thread SIGKILLs a
random worker agent or processor every few seconds. Every future must resolve exactly
once, to the right value or the expected error (a task killed more often than
max_task_retries fails with WorkerDiedError/ProcessorDiedError and is counted apart), and
the scheduler's memory must stay flat. Exit status 1 if anything was lost, duplicated or
wrong.
"""

import argparse
import collections
import os
import random
import signal
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import scaler  # noqa: F401
except ImportError:
    sys.path.insert(0, REPO)

from scaler import Client, SchedulerClusterCombo  # noqa: E402
from scaler.utility.exceptions import ProcessorDiedError, WorkerDiedError  # noqa: E402


def square(x):
    time.sleep(random.random() * 0.005)
    return x * x


def length(blob):
    return len(blob)


def add(a, b):
    return a + b


def fib(n):
    if n < 2:
        return n
    client = Client()
    a, b = client.submit(fib, n - 1), client.submit(fib, n - 2)
    return a.result() + b.result()


def fails(x):
    raise ValueError("on purpose %d" % x)


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _rss(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Ledger:
    """Counts how many times each future resolved, from its done-callback."""

    def __init__(self):
        self.lock = threading.Lock()
        self.resolved = collections.Counter()
        self.expected = {}

    def track(self, future, expected):
        self.expected[future] = expected
        future.add_done_callback(self._done)

    def _done(self, future):
        with self.lock:
            self.resolved[future] += 1


def killer(combo, stop, interval, kills):
    rng = random.Random(7)
    pool = combo._worker_manager_process.pid
    while not stop.wait(interval * (0.5 + rng.random())):
        agents = _children(pool)
        if not agents:
            continue
        agent = rng.choice(agents)
        victims = [agent] + _children(agent)  # the agent, or its processor
        victim = rng.choice(victims)
        try:
            os.kill(victim, signal.SIGKILL)
            kills["agent" if victim == agent else "processor"] += 1
        except ProcessLookupError:
            pass


def run(minutes, kill_interval, seed=1):
    rng = random.Random(seed)
    ledger = Ledger()
    kills = collections.Counter()
    rss = []
    rounds = collections.Counter()
    with SchedulerClusterCombo(n_workers=3, logging_level="ERROR") as combo:
        scheduler_pid = combo._scheduler.pid
        stop = threading.Event()
        thread = threading.Thread(target=killer, args=(combo, stop, kill_interval, kills), daemon=True)
        with Client(combo.get_address(), timeout_seconds=120) as client:
            client.map(square, range(10))  # warm up before the first kill
            rss.append((0.0, _rss(scheduler_pid)))
            thread.start()
            started = time.monotonic()
            last_sample = started
            while time.monotonic() - started < minutes * 60:
                kind = rng.choice(["map", "big_args", "object", "graph", "nested", "fail"])
                rounds[kind] += 1
                if kind == "map":
                    xs = list(range(rng.randint(50, 300)))
                    for x, f in zip(xs, client.map_futures(square, xs)):
                        ledger.track(f, x * x)
                elif kind == "big_args":
                    for i in range(10):
                        ledger.track(client.submit(length, bytes(200 * 1024 + i)), 200 * 1024 + i)
                elif kind == "object":
                    ref = client.send_object(bytes(1024 * 1024))
                    for _ in range(10):
                        ledger.track(client.submit(length, ref), 1024 * 1024)
                elif kind == "graph":
                    graph = {"a%d" % i: (add, i, 1) for i in range(25)}
                    graph.update({"b%d" % i: (add, "a%d" % i, "a%d" % (i + 1)) for i in range(24)})
                    keys = ["b%d" % i for i in range(24)]
                    for i, f in enumerate(client.get(graph, keys, block=False)):
                        ledger.track(f, (i + 1) + (i + 2))
                elif kind == "nested":
                    ledger.track(client.submit(fib, 6), 8)
                else:
                    ledger.track(client.submit(fails, 1), ValueError)
                # Every 25 rounds: let what is in flight finish, then clear() the objects this
                # client stored (send_object payloads live until then, by design).
                if sum(rounds.values()) % 25 == 0:
                    for f in [f for f in ledger.expected if not f.done()]:
                        try:
                            f.exception(timeout=300)
                        except Exception:  # noqa: BLE001 - checked at the end
                            pass
                    client.clear()
                now = time.monotonic()
                if now - last_sample >= 5:
                    rss.append((now - started, _rss(scheduler_pid)))
                    last_sample = now
            stop.set()
            thread.join(10)
            outcome = collections.Counter()
            for future, expected in list(ledger.expected.items()):
                try:
                    value = future.result(timeout=300)
                    outcome["ok" if value == expected else "wrong"] += 1
                except ValueError:
                    outcome["ok" if expected is ValueError else "wrong"] += 1
                except (WorkerDiedError, ProcessorDiedError):
                    outcome["killed too often"] += 1
                except Exception as exc:  # noqa: BLE001
                    outcome["error %s" % type(exc).__name__] += 1
            time.sleep(0.5)  # late callbacks, if any
            rss.append((time.monotonic() - started, _rss(scheduler_pid)))
    resolved_counts = collections.Counter(ledger.resolved[f] for f in ledger.expected)
    return {"futures": len(ledger.expected), "outcome": dict(outcome), "resolved_counts": dict(resolved_counts),
            "kills": dict(kills), "rounds": dict(rounds), "rss": rss, "minutes": minutes}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--kill-interval", type=float, default=3.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    report = run(args.minutes, args.kill_interval)
    rss = report["rss"]
    mib = [r / 2 ** 20 for _, r in rss]
    settled = mib[len(mib) // 4:] or mib  # after the first quarter: caches are warm
    print("soak: %.1f min, %d futures, kills: %s" % (report["minutes"], report["futures"], report["kills"]))
    print("  rounds:           %s" % report["rounds"])
    print("  outcome:          %s" % report["outcome"])
    print("  resolved N times: %s" % report["resolved_counts"])
    print("  scheduler RSS:    start %.0f MiB, min/max after warm-up %.0f/%.0f MiB, end %.0f MiB"
          % (mib[0], min(settled), max(settled), mib[-1]))
    lost = report["resolved_counts"].get(1, 0) != report["futures"]
    wrong = report["outcome"].get("wrong", 0) or any(k.startswith("error") for k in report["outcome"])
    grew = mib[-1] > max(min(settled) * 1.5, min(settled) + 40)
    if lost or wrong or grew:
        print("FAILED: %s" % ", ".join(w for w, bad in (("lost or duplicated", lost), ("wrong", wrong),
                                                         ("memory grew", grew)) if bad))
        return 1
    print("ok: every future resolved exactly once; memory flat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
