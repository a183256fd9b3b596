"""``stream_output``: a task's ``sys.stdout``/``sys.stderr`` sent to its client while it runs.

Line-buffered like a terminal: a write that completes a line (or fills 8 KiB) is sent at
once as a ``TaskOutput``, so the client sees progress as it happens; the rest goes at the
next line, an explicit ``flush()`` or the end of the task. Pieces are at most 64 KiB, so a
task that prints a lot never makes one huge frame. Only Python-level writes are caught
(``print``, ``sys.stdout.write``, ``logging`` to a stream handler made during the task);
what a C extension or a child process writes to file descriptor 1 or 2 stays on the worker.
"""

import io
import threading
from typing import Any, Callable, List

from ..protocol.messages import TaskOutput

STDOUT = 1
STDERR = 2
_SEND_AT = 8192  # buffered characters that are sent even without a newline
_PIECE = 65536  # largest TaskOutput payload


class TaskOutputStream(io.TextIOBase):
    """A text stream whose writes become ``TaskOutput`` messages of one task."""

    def __init__(self, task_id: bytes, stream: int, send: Callable[[Any], None]) -> None:
        super().__init__()
        self._task_id = task_id
        self._stream = stream
        self._send = send
        self._buffer: List[str] = []
        self._buffered = 0
        self._lock = threading.Lock()  # threads of the task print too

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        if not text:
            return 0
        with self._lock:
            self._buffer.append(text)
            self._buffered += len(text)
            if "\n" in text or self._buffered >= _SEND_AT:
                self._send_buffer()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._buffered:
                self._send_buffer()

    def _send_buffer(self) -> None:
        data = "".join(self._buffer).encode("utf-8", "replace")
        self._buffer = []
        self._buffered = 0
        for start in range(0, len(data), _PIECE):
            try:
                self._send(TaskOutput(self._task_id, self._stream, data[start:start + _PIECE]))
            except OSError:
                return  # the agent is gone; the processor is about to notice and exit

    def close(self) -> None:
        self.flush()  # closing sys.stdout in a task must not lose what it wrote
