"""bench_peers.py runner for ``multiprocessing.Pool`` (the platform's default start
method); ``map`` with its default chunksize, ceil(n / (4 * workers)), or with
chunksize=1 for ``{"flavour": "chunksize1"}`` (the ``pool1`` column)."""

import json
import multiprocessing
import sys

import peer_harness as harness


def default_chunksize(n_items, n_workers):
    """multiprocessing.Pool.map's default chunksize."""
    chunksize, extra = divmod(n_items, n_workers * 4)
    return max(1, chunksize + (1 if extra else 0))


class _Result(object):
    __slots__ = ("async_result",)

    def __init__(self, async_result):
        self.async_result = async_result

    def result(self):
        return self.async_result.get()


class PoolEngine(harness.Engine):
    name = "pool"
    map_chunksize = staticmethod(default_chunksize)

    def __init__(self, flavour="pool"):
        self.pool = None
        if flavour == "chunksize1":
            self.name, self.map_chunksize = "pool1", 1

    def start(self, workers):
        self.pool = multiprocessing.Pool(workers)

    def submit(self, fn, *args):
        return _Result(self.pool.apply_async(fn, args))

    def map(self, fn, items):
        return self.pool.map(fn, items, chunksize=None if callable(self.map_chunksize) else self.map_chunksize)

    def shutdown(self):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


if __name__ == "__main__":
    harness.main(PoolEngine(json.loads(sys.argv[1]).get("flavour", "pool")))
