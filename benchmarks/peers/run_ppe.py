"""bench_peers.py runner for ``concurrent.futures.ProcessPoolExecutor`` (the platform's
default start method); ``map`` with chunksize=1, its default."""

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

import peer_harness as harness


class PPEEngine(harness.Engine):
    name = "ppe"
    map_chunksize = 1

    def __init__(self):
        self.pool = None

    def start(self, workers):
        self.pool = ProcessPoolExecutor(max_workers=workers)

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def map(self, fn, items):
        return list(self.pool.map(fn, items, chunksize=1))

    def cancel(self, futures):
        for future in futures:
            future.cancel()

    def shutdown(self):
        if self.pool is not None:
            if sys.version_info >= (3, 9):
                self.pool.shutdown(wait=True, cancel_futures=True)
            else:
                self.pool.shutdown(wait=True)


if __name__ == "__main__":
    multiprocessing.freeze_support()
    harness.main(PPEEngine())
