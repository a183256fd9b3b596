"""``ScalerFuture``: a ``concurrent.futures.Future`` whose result is deserialised on first use.

The client's I/O thread only stores the result bytes; the first ``result()`` (or a
callback, or ``asyncio.wrap_future``) deserialises them in the caller's thread. So
``wait``, ``as_completed`` and asyncio work unchanged, and the I/O thread stays free.
"""

from concurrent.futures import Future
from typing import Any, Callable, Optional

from ..utility.exceptions import DeserializeObjectError

_NOT_DECODED = object()


class ScalerFuture(Future):
    def __init__(self, task_id: bytes, canceller: Optional[Callable[[bytes], None]] = None) -> None:
        super().__init__()
        self._task_id = task_id
        self._canceller = canceller
        self._payload: Any = None
        self._deserialize: Optional[Callable[[Any], Any]] = None
        self._temp_objects: tuple = ()

    @property
    def task_id(self) -> bytes:
        return self._task_id

    def _set_payload(self, payload: Any, deserialize: Callable[[Any], Any]) -> None:
        self._payload = payload
        self._deserialize = deserialize
        self.set_result(_NOT_DECODED)

    def result(self, timeout: Optional[float] = None) -> Any:
        value = super().result(timeout)
        if value is _NOT_DECODED:
            value = self._decode()
        return value

    def _decode(self) -> Any:
        with self._condition:  # the Future's own lock: no extra lock per task
            if self._result is _NOT_DECODED:
                try:
                    self._result = self._deserialize(self._payload)
                except Exception as exc:
                    raise DeserializeObjectError("cannot deserialise the result of task %s: %r"
                                                 % (self._task_id.hex(), exc)) from exc
                self._payload = None
            return self._result

    def cancel(self) -> bool:
        """Cancel the task wherever it is: queued, or running (its processor is restarted)."""
        if self.done():
            return False
        cancelled = super().cancel()
        if cancelled and self._canceller is not None:
            self._canceller(self._task_id)
        return cancelled

    def __repr__(self) -> str:
        return "<ScalerFuture %s %s>" % (self._task_id.hex()[:12], self._state)
