"""Scaling decisions: pure functions of what the scheduler knows. No I/O here.

Vocabulary: a *manager* can start and stop *worker groups* (one worker each). Its
``capacity`` is how many groups it may run (-1: no limit, 0: a fixed pool that is never
scaled). The scheduler calls :func:`decide` about once a second and carries out what it
returns: start groups on managers, drain workers (no new tasks), shut down drained ones.

``vanilla`` sizes the pool from the task count:
- tasks per worker above ``upper_task_ratio`` → grow to ``ceil(tasks / upper)`` workers;
- below ``lower_task_ratio`` → shrink to ``ceil(tasks / lower)`` workers (0 when idle),
  taking only workers idle for ``IDLE_GRACE_SECONDS`` or, failing that, draining the
  least loaded ones first, so a running task is never killed.
Workers of fixed pools count as workers but are never stopped. Scale-up asks managers in
the order they connected (the first with room, skipping one that refused recently);
scale-down takes groups from the most recently connected manager first.
"""

import math
from typing import Dict, FrozenSet, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ..config.policy import Policy

IDLE_GRACE_SECONDS = 2.0  # a worker idle for less than this is not stopped (avoids flapping)
REFUSAL_BACKOFF_SECONDS = 5.0


class WorkerView(NamedTuple):
    worker_id: bytes
    manager_id: str  # "" for a worker no manager started
    group_id: str  # "" unless a dynamic manager started it as a group
    tasks: int  # assigned to it: queued on it or running
    idle_since: Optional[float]  # when it last became idle; None while it has tasks
    draining: bool


class ManagerView(NamedTuple):
    manager_id: str
    capacity: int  # -1: unlimited; 0: fixed pool
    groups: int  # groups it runs now (started and not yet stopped)
    pending_starts: int  # start requests not answered yet
    refused_at: Optional[float]
    capabilities: FrozenSet[str] = frozenset()  # the capability names its workers have


class Decision(NamedTuple):
    starts: List[str]  # one entry per group to start: the manager to ask
    drain: List[bytes]  # workers to stop giving tasks to (stopped once empty)
    undrain: List[bytes]  # draining workers needed again
    stops: List[Tuple[str, str]]  # (manager_id, group_id) of drained, empty workers to shut down


def decide(policy: Policy, now: float, tasks: int, workers: Sequence[WorkerView],
           managers: Sequence[ManagerView], missing: Mapping[FrozenSet[str], int] = {}) -> Decision:
    """``missing``: tasks waiting for capability sets that no connected worker has."""
    decision = Decision([], [], [], [])
    # Drained workers that are empty can go whatever the policy says.
    for worker in workers:
        if worker.draining and worker.tasks == 0 and worker.group_id:
            decision.stops.append((worker.manager_id, worker.group_id))
    if policy.scaling != "vanilla" or not managers:
        return decision
    # Tasks that only a worker with certain capabilities can run: one group from a manager
    # whose workers have them, unless one is already on its way.
    for needs in missing:
        able = [m for m in managers if needs <= m.capabilities]
        if not any(m.pending_starts for m in able):
            decision.starts.extend(_place_starts(1, able, now))
    active = [w for w in workers if not w.draining]
    pending = sum(m.pending_starts for m in managers) + len(decision.starts)
    current = len(active) + pending
    if tasks > 0 and tasks > policy.upper_task_ratio * current:
        wanted = max(1, math.ceil(tasks / policy.upper_task_ratio)) - current
        # Workers on their way out are the cheapest to get back.
        for worker in workers:
            if wanted <= 0:
                break
            if worker.draining and worker.tasks > 0:
                decision.undrain.append(worker.worker_id)
                wanted -= 1
        decision.starts.extend(_place_starts(wanted, managers, now))
    elif current > 0 and tasks < policy.lower_task_ratio * current and pending == 0:
        target = math.ceil(tasks / policy.lower_task_ratio) if policy.lower_task_ratio > 0 else current
        excess = len(active) - target
        if excess > 0:
            decision.drain.extend(_pick_drains(excess, active, managers, now))
    return decision


def _place_starts(count: int, managers: Sequence[ManagerView], now: float) -> List[str]:
    starts: List[str] = []
    for manager in managers:
        if count <= 0:
            break
        if manager.capacity == 0:
            continue
        if manager.refused_at is not None and now - manager.refused_at < REFUSAL_BACKOFF_SECONDS:
            continue
        room = count if manager.capacity < 0 else manager.capacity - manager.groups - manager.pending_starts
        take = min(count, max(0, room))
        starts.extend([manager.manager_id] * take)
        count -= take
    return starts


def _pick_drains(count: int, active: Sequence[WorkerView], managers: Sequence[ManagerView],
                 now: float) -> List[bytes]:
    order: Dict[str, int] = {m.manager_id: i for i, m in enumerate(managers) if m.capacity != 0}
    candidates = [w for w in active if w.group_id and w.manager_id in order]
    idle = [w for w in candidates if w.tasks == 0 and w.idle_since is not None
            and now - w.idle_since >= IDLE_GRACE_SECONDS]
    busy = [w for w in candidates if w.tasks > 0]
    # Idle ones first (from the last manager), then the least loaded busy ones.
    idle.sort(key=lambda w: -order[w.manager_id])
    busy.sort(key=lambda w: (w.tasks, -order[w.manager_id]))
    chosen = idle[:count]
    if len(chosen) < count and not idle_pending(candidates, now):
        chosen.extend(busy[:count - len(chosen)])
    return [w.worker_id for w in chosen]


def idle_pending(candidates: Sequence[WorkerView], now: float) -> bool:
    """Some worker is idle but still within its grace period: wait for it rather than drain a busy one."""
    return any(w.tasks == 0 and (w.idle_since is None or now - w.idle_since < IDLE_GRACE_SECONDS)
               for w in candidates)
