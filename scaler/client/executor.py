"""``ScalerExecutor``: a real ``concurrent.futures.Executor`` over a scaler cluster.

Code written for ``ProcessPoolExecutor`` runs on a cluster by changing one line::

    with ScalerExecutor("tcp://127.0.0.1:8516") as pool:      # was: ProcessPoolExecutor()
        results = list(pool.map(work, items, chunksize=100))

``submit`` returns a :class:`~scaler.client.future.ScalerFuture` (a ``Future``); ``map``
submits every call at once and yields the results in order as they are consumed, raising
``TimeoutError`` past ``timeout`` (counted from the call, as ``concurrent.futures``
does); ``chunksize`` > 1 sends that many calls as one task. ``shutdown(wait=True,
cancel_futures=False)`` behaves as ``concurrent.futures`` documents.
"""

import threading
import time
from concurrent import futures as _futures
from typing import Any, Callable, Iterable, Iterator, List, Optional, Set


def _run_chunk(fn: Callable[..., Any], chunk: List[tuple]) -> List[Any]:
    """What a worker runs for ``map(..., chunksize > 1)``: several calls as one task."""
    return [fn(*args) for args in chunk]


class ScalerExecutor(_futures.Executor):
    """An ``Executor`` whose workers are a scaler cluster's.

    Give an ``address`` (the executor opens its own ``Client`` with ``client_options`` and
    closes it on shutdown), or an open ``client`` (``client.executor()``; it stays open).
    """

    def __init__(self, address: Optional[str] = None, client: Any = None, **client_options: Any) -> None:
        if client is None:
            from .client import Client
            client = Client(address, **client_options)
            self._owns_client = True
        else:
            if address is not None or client_options:
                raise TypeError("give an address (and client options) or a client, not both")
            self._owns_client = False
        self._client = client
        self._lock = threading.Lock()
        self._pending: Set[Any] = set()
        self._shut_down = False

    @property
    def client(self) -> Any:
        return self._client

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future = self._client.submit(fn, *args, **kwargs)
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Any) -> None:
        with self._lock:
            self._pending.discard(future)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator[Any]:
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        deadline = None if timeout is None else time.monotonic() + timeout
        calls = zip(*iterables)
        if chunksize == 1:
            submitted = [self.submit(fn, *args) for args in calls]
        else:
            submitted = []
            chunk: List[tuple] = []
            for args in calls:
                chunk.append(args)
                if len(chunk) == chunksize:
                    submitted.append(self.submit(_run_chunk, fn, chunk))
                    chunk = []
            if chunk:
                submitted.append(self.submit(_run_chunk, fn, chunk))
        return self._results(submitted, deadline, chunksize > 1)

    @staticmethod
    def _results(submitted: List[Any], deadline: Optional[float], chunked: bool) -> Iterator[Any]:
        submitted.reverse()  # pop() from the end: the first call first, and drop what was yielded
        try:
            while submitted:
                future = submitted.pop()
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                value = future.result(remaining)
                if chunked:
                    yield from value
                else:
                    yield value
        finally:
            for future in submitted:  # abandoned (an error, a timeout, a closed generator)
                future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shut_down = True
            pending = list(self._pending)
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait and pending:
            _futures.wait(pending)
        if self._owns_client:
            self._client.disconnect()
