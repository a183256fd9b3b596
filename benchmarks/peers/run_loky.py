"""bench_peers.py runner for loky: ``loky.get_reusable_executor(max_workers=N)``; its
``map`` with the default chunksize (1)."""

import peer_harness as harness


class LokyEngine(harness.Engine):
    name = "loky"
    map_chunksize = 1

    def __init__(self):
        self.executor = None

    def load(self):
        import loky  # noqa: F401

    def start(self, workers):
        import loky

        self.executor = loky.get_reusable_executor(max_workers=workers)

    def submit(self, fn, *args):
        return self.executor.submit(fn, *args)

    def map(self, fn, items):
        return list(self.executor.map(fn, items))

    def cancel(self, futures):
        for future in futures:
            future.cancel()

    def shutdown(self):
        if self.executor is not None:
            self.executor.shutdown(wait=True, kill_workers=True)


if __name__ == "__main__":
    harness.main(LokyEngine())
