"""Where the task that is running in this process (if any) came from.

The processor fills it in around each task; a ``Client()`` made inside a task reads it to
join the scheduler that runs the task and to rank its tasks above their parent (priority
+ 1), so nested tasks run before queued top-level ones. The processor also installs
``wait_hook``: a future's ``result()`` inside a task waits through it, so the processor can
run the tasks it waits for (see "Nested tasks" in ``docs/architecture.rst``), and
``block_hook``/``wake``, through which ``concurrent.futures.wait``/``as_completed`` do the same
inside a task (``scaler.worker.cooperative_wait``).
"""

from typing import Any, Callable, Optional, Tuple

task_id: Optional[bytes] = None  # None: not inside a task
priority: int = 0
# (future, timeout) -> None: returns once the future is done or the timeout has passed.
wait_hook: Optional[Callable[[Any, Optional[float]], None]] = None
# (ready, timeout) -> None: returns once ready() is true or the timeout has passed, running
# meanwhile the tasks that outrank the running one; whatever may make ready() true calls wake().
block_hook: Optional[Callable[[Callable[[], bool], Optional[float]], None]] = None
wake: Optional[Callable[[], None]] = None


def nested_priority() -> int:
    """The default priority of a task submitted from here: its parent's + 1 inside a task, else 0."""
    return min(priority + 1, 2 ** 63 - 1) if task_id is not None else 0


def enter(current_task_id: bytes, current_priority: int) -> Tuple[Optional[bytes], int]:
    """A task starts (perhaps on top of a waiting one): returns what to :func:`restore` after it."""
    global task_id, priority
    previous = task_id, priority
    task_id, priority = current_task_id, current_priority
    return previous


def restore(previous: Tuple[Optional[bytes], int]) -> None:
    global task_id, priority
    task_id, priority = previous
