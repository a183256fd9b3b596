"""A task as the scheduler holds it: its record, its states and the legal moves between them.

The diagram (also in ``docs/architecture.rst``)::

    WAITING ──inputs done──▶ QUEUED ──dispatch──▶ ASSIGNED ──result──▶ DONE
       │                      ▲  │                 │  ▲ │
       │                      │  └──cancel──▶ DONE │  │ └─cancel──▶ CANCELLING ──▶ DONE
       │                      │                    │  │
       │                      └──worker lost / given back── MOVING ◀─balance─┘
       └──input failed / cancel──▶ DONE

``ASSIGNED`` covers "queued on the worker's agent" and "running": the scheduler cannot
tell them apart, and does not need to. ``DONE`` is terminal: the client has been told
(result, failure or cancellation) and the record is dropped.
"""

import enum
from typing import Dict, FrozenSet, Optional, Tuple


class TaskState(enum.IntEnum):
    WAITING = 0  # a graph node whose inputs are not all finished
    QUEUED = 1  # ready, in the scheduler's ready queue
    ASSIGNED = 2  # sent to a worker
    MOVING = 3  # asked back from its worker (balancing); requeued when it gives it back
    CANCELLING = 4  # the client cancelled it; its worker was told to stop it
    DONE = 5


_S = TaskState
ALLOWED: Dict[TaskState, FrozenSet[TaskState]] = {
    _S.WAITING: frozenset((_S.QUEUED, _S.DONE)),
    _S.QUEUED: frozenset((_S.ASSIGNED, _S.DONE)),
    _S.ASSIGNED: frozenset((_S.MOVING, _S.CANCELLING, _S.QUEUED, _S.DONE)),
    _S.MOVING: frozenset((_S.QUEUED, _S.CANCELLING, _S.DONE)),
    _S.CANCELLING: frozenset((_S.DONE,)),
    _S.DONE: frozenset(),
}
ON_WORKER = frozenset((_S.ASSIGNED, _S.MOVING, _S.CANCELLING))


class IllegalTransition(RuntimeError):
    """A bug in the scheduler: a task was moved along an edge the diagram does not have."""


class Task:
    __slots__ = ("task_id", "client_id", "flags", "func_id", "call", "capabilities", "priority", "state",
                 "worker_id", "retries", "graph")

    def __init__(self, task_id: bytes, client_id: bytes, flags: int, func_id: bytes, call: bytes,
                 capabilities: FrozenSet[str], priority: int = 0, state: TaskState = TaskState.QUEUED) -> None:
        self.task_id = task_id
        self.client_id = client_id
        self.flags = flags
        self.func_id = func_id
        self.call = call
        self.capabilities = capabilities  # the names a worker must have (empty: any worker)
        self.priority = priority
        self.state = state  # where it starts: QUEUED, or WAITING for a graph node with inputs
        self.worker_id: Optional[bytes] = None  # set exactly while the state is in ON_WORKER
        self.retries = 0
        self.graph: Optional[object] = None  # the graph node, for tasks of a submitted graph

    def move(self, new: TaskState) -> None:
        if new not in ALLOWED[self.state]:
            raise IllegalTransition("task %s: %s -> %s" % (self.task_id.hex()[:12], self.state.name, new.name))
        self.state = new

    def __repr__(self) -> str:
        return "Task(%s, %s)" % (self.task_id.hex()[:12], self.state.name)


def edges() -> Tuple[Tuple[TaskState, TaskState], ...]:
    """Every legal transition, for the documentation test and the property test."""
    return tuple((a, b) for a in TaskState for b in sorted(ALLOWED[a]))
