"""bench_peers.py runner for scaler: this checkout's, or upstream OpenGRIS Scaler
(``opengris-scaler``, from its own virtual environment) with ``{"flavour": "upstream"}``
in the configuration. Both have ``from scaler import Client, SchedulerClusterCombo``."""

import json
import sys

import peer_harness as harness
import peer_tasks as tasks


class ScalerEngine(harness.Engine):
    def __init__(self, flavour):
        self.name = flavour
        self.upstream = flavour == "upstream"
        self.combo = self.client = None

    def load(self):
        from scaler import Client, SchedulerClusterCombo  # noqa: F401

    def start(self, workers):
        from scaler import Client, SchedulerClusterCombo

        self.combo = SchedulerClusterCombo(n_workers=workers, logging_level="WARNING")
        self.client = Client(address=self.combo.get_address())

    def submit(self, fn, *args):
        return self.client.submit(fn, *args)

    def map(self, fn, items):
        return self.client.map(fn, items)

    def put_object(self, payload):
        return self.client.send_object(payload)

    def object_note(self):
        return "send_object once, the reference is the argument of every task"

    @property
    def graph_note(self):
        if self.upstream:
            return "client.get; leaf arguments are data nodes (upstream reads every argument as a key)"
        return "client.get of the dict graph"

    def graph(self, n):
        if self.upstream:
            graph = {"arg-%d" % i: i for i in range(n)}
            graph.update({"leaf-%d" % i: (tasks.graph_leaf, "arg-%d" % i) for i in range(n)})
        else:
            graph = {"leaf-%d" % i: (tasks.graph_leaf, i) for i in range(n)}
        graph.update({"pair-%d" % i: (tasks.graph_pair, "leaf-%d" % i, "leaf-%d" % ((i + 1) % n))
                      for i in range(n)})
        keys = ["pair-%d" % i for i in range(n)]
        results = self.client.get(graph, keys)
        if isinstance(results, dict):
            results = [results[k] for k in keys]
        return results

    def scheduler_pids(self):
        roles = {}
        if self.upstream:
            for attribute, role in (("_scheduler", "scheduler"), ("_object_storage", "object storage")):
                process = getattr(self.combo, attribute, None)
                if getattr(process, "pid", None):
                    roles[process.pid] = role
            return roles
        for pid in harness.process_tree():
            command = harness.cmdline(pid)
            name = harness.comm(pid)  # a forked worker or processor: named, its command line its parent's
            if name == "scaler-proc":
                roles[pid] = "processor"
            elif name == "scaler-worker":
                roles[pid] = "agent"
            elif ".scheduler" in command:
                roles[pid] = "scheduler"
            elif ".worker.processor" in command:
                roles[pid] = "processor"
            elif ".worker " in command or command.endswith(".worker"):
                roles[pid] = "agent"
            elif ".cluster" in command:
                roles[pid] = "worker manager"
        return roles

    def shutdown(self):
        try:
            if self.client is not None:
                self.client.disconnect()
        finally:
            if self.combo is not None:
                self.combo.shutdown()


if __name__ == "__main__":
    harness.main(ScalerEngine(json.loads(sys.argv[1]).get("flavour", "scaler")))
