"""Where the task that is running in this process (if any) came from.

The processor fills it in before it runs each task; a ``Client()`` made inside a task reads
it to join the scheduler that runs the task and to rank its tasks above their parent
(priority + 1), so nested tasks run before queued top-level ones.
"""

from typing import Optional

task_id: Optional[bytes] = None  # None: not inside a task
priority: int = 0


def nested_priority() -> int:
    """The default priority of a task submitted from here: its parent's + 1 inside a task, else 0."""
    return priority + 1 if task_id is not None else 0


def enter(current_task_id: bytes, current_priority: int) -> None:
    global task_id, priority
    task_id, priority = current_task_id, current_priority


def leave() -> None:
    global task_id, priority
    task_id, priority = None, 0
