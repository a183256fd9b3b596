"""bench_peers.py runner for Dask distributed: ``LocalCluster(n_workers=N,
threads_per_worker=1, processes=True)`` and a ``Client`` on it. The scheduler runs in
this (the client's) process, as LocalCluster places it."""

import peer_harness as harness
import peer_tasks as tasks


class DaskEngine(harness.Engine):
    name = "dask"
    graph_note = "client.get of the dict graph"
    scheduler_note = "LocalCluster's scheduler runs in the client process"

    def __init__(self):
        self.cluster = self.client = None

    def load(self):
        from distributed import Client, LocalCluster  # noqa: F401

    def start(self, workers):
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None)
        self.client = Client(self.cluster)

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def map(self, fn, items):
        return self.client.gather(self.client.map(fn, list(items), pure=False))

    def put_object(self, payload):
        return self.client.scatter(payload, broadcast=False)

    def object_note(self):
        return "client.scatter(broadcast=False) once, the future is the argument of every task"

    def graph(self, n):
        graph = {"leaf-%d" % i: (tasks.graph_leaf, i) for i in range(n)}
        graph.update({"pair-%d" % i: (tasks.graph_pair, "leaf-%d" % i, "leaf-%d" % ((i + 1) % n))
                      for i in range(n)})
        return self.client.get(graph, ["pair-%d" % i for i in range(n)])

    def submit_queued(self, fn, items):
        return self.client.map(fn, list(items), pure=False)  # one batched update_graph

    def cancel(self, futures):
        self.client.cancel(futures)

    def shutdown(self):
        try:
            if self.client is not None:
                self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


if __name__ == "__main__":
    harness.main(DaskEngine())
