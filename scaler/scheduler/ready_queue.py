"""The scheduler's queue of ready tasks: highest priority first, submission order within one.

One deque per priority level, so the common case (every task at one level) costs a deque
append and popleft, and a handful of levels (nested tasks add one per depth) cost a
bisect. A task that left the queue some other way (cancelled) stays behind as a stale
entry and is skipped by :meth:`pop`, which is cheaper than searching for it.
"""

import bisect
import collections
from typing import Deque, Dict, Iterator, List, Optional

from .task import Task, TaskState


class ReadyQueue:
    def __init__(self) -> None:
        self._levels: Dict[int, Deque[Task]] = {}
        self._order: List[int] = []  # the levels present, as negated priorities: ascending = best first

    def push(self, task: Task) -> None:
        self._level(task.priority).append(task)

    def push_front(self, task: Task) -> None:
        """For a task coming back (worker lost, given back): ahead of its level's newer tasks."""
        self._level(task.priority).appendleft(task)

    def pop(self) -> Optional[Task]:
        """The best ready task, or None; drops stale entries on the way."""
        while self._order:
            key = self._order[0]
            level = self._levels[key]
            while level:
                task = level.popleft()
                if task.state is TaskState.QUEUED:
                    return task
            del self._levels[key]
            self._order.pop(0)
        return None

    def peek(self) -> Optional[Task]:
        """The task :meth:`pop` would return, left in the queue."""
        while self._order:
            key = self._order[0]
            level = self._levels[key]
            while level:
                if level[0].state is TaskState.QUEUED:
                    return level[0]
                level.popleft()
            del self._levels[key]
            self._order.pop(0)
        return None

    def _level(self, priority: int) -> Deque[Task]:
        level = self._levels.get(-priority)
        if level is None:
            level = self._levels[-priority] = collections.deque()
            bisect.insort(self._order, -priority)
        return level

    def __iter__(self) -> Iterator[Task]:
        """The live entries, in the order :meth:`pop` would return them."""
        for key in self._order:
            for task in self._levels[key]:
                if task.state is TaskState.QUEUED:
                    yield task

    def __len__(self) -> int:
        """Entries including stale ones: an upper bound, O(levels)."""
        return sum(len(level) for level in self._levels.values())

    def __bool__(self) -> bool:
        return bool(self._order)
