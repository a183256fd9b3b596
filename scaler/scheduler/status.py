"""The status snapshot the scheduler publishes to monitors: a pure function of its tables.

:func:`build_snapshot` reads :class:`~.state.SchedulerState`, the manager table and the
object store and returns a plain dict (sent as JSON inside a ``StatusSnapshot`` frame).
Nothing here does I/O or changes state, so tests build snapshots from a state machine they
drive by hand. Every field is documented in ``docs/monitoring.rst``; add a field there too.

Rates are differences of the scheduler's running totals between two snapshots
(:class:`RateMeter`), so they cost nothing per task.
"""

import collections
from typing import Any, Dict, List, NamedTuple, Optional

from .task import TaskState

SNAPSHOT_VERSION = 1
STATE_NAMES = ("waiting", "queued", "assigned", "moving", "cancelling")  # TaskState order, DONE excluded
_INDEX = {TaskState.WAITING: 0, TaskState.QUEUED: 1, TaskState.ASSIGNED: 2, TaskState.MOVING: 3,
          TaskState.CANCELLING: 4}


class Totals(NamedTuple):
    submitted: int
    finished: int
    failed: int
    cancelled: int


def totals_of(state: Any) -> Totals:
    return Totals(state.submitted_total, state.finished_total, state.failed_total, state.cancelled_total)


class RateMeter:
    """Per-second rates of the totals, between consecutive calls of :meth:`update`."""

    def __init__(self, now: float, totals: Totals) -> None:
        self._time = now
        self._totals = totals
        self.rates: Dict[str, float] = {name: 0.0 for name in Totals._fields}

    def update(self, now: float, totals: Totals, min_elapsed: float = 0.0) -> Dict[str, float]:
        """The rates since the previous update, unless it is less than ``min_elapsed`` ago
        (then the previous rates: a short window would be noisy)."""
        elapsed = now - self._time
        if elapsed > 0 and elapsed >= min_elapsed:
            self.rates = {name: max(0.0, (new - old) / elapsed)
                          for name, new, old in zip(Totals._fields, totals, self._totals)}
            self._time = now
            self._totals = totals
        return self.rates


def task_counts(state: Any) -> Dict[str, int]:
    """Tasks the scheduler holds, by state, plus ``running`` (as the workers last reported)."""
    counts = [0] * len(STATE_NAMES)
    for task_state, count in collections.Counter(task.state for task in state.tasks.values()).items():
        index = _INDEX.get(task_state)
        if index is not None:
            counts[index] = count
    out = dict(zip(STATE_NAMES, counts))
    out["total"] = len(state.tasks)
    out["running"] = sum(min(w.running, len(w.tasks)) for w in state.workers.values())
    return out


def _age(now: float, then: Optional[float]) -> Optional[float]:
    return None if then is None else round(max(0.0, now - then), 3)


def worker_rows(state: Any, now: float) -> List[Dict[str, Any]]:
    rows = []
    for worker in state.workers.values():
        assigned = len(worker.tasks)
        running = min(worker.running, assigned)
        rows.append({
            "id": worker.worker_id.hex(),
            "name": worker.name,
            "host": worker.host,
            "pid": worker.pid,
            "manager": worker.manager_id,
            "group": worker.group_id,
            "capabilities": worker.capabilities,
            "queue_size": worker.queue_size,
            "agent_cpu": round(worker.cpu, 1),
            "agent_rss": worker.rss,
            "processor_pid": worker.processor_pid,
            "processor_cpu": round(worker.processor_cpu, 1),
            "processor_rss": worker.processor_rss,
            "assigned": assigned,
            "queued": assigned - running,
            "running": running,
            "done": worker.done,
            "suspended": worker.suspended,
            "heartbeat_age": _age(now, worker.last_seen),
            "connected_for": _age(now, worker.connected_at),
            "idle_for": _age(now, worker.idle_since),
            "draining": worker.draining,
        })
    return rows


def client_rows(state: Any, now: float) -> List[Dict[str, Any]]:
    return [{"id": client.client_id.hex(), "tasks": client.task_count, "heartbeat_age": _age(now, client.last_seen)}
            for client in state.clients.values()]


def manager_rows(managers: Any, now: float) -> List[Dict[str, Any]]:
    if managers is None:
        return []
    rows = []
    for record in managers.managers.values():
        rows.append({
            "id": record.manager_id,
            "mode": record.mode,
            "capacity": record.capacity,
            "groups": len(record.groups),
            "pending_starts": len(record.pending),
            "stopping": len(record.stopping),
            "via": record.via,
            "capabilities": sorted(record.capabilities),
            "refused_for": _age(now, record.refused_at),
        })
    return rows


def scaling_of(managers: Any, policy: Any) -> Dict[str, Any]:
    events = [] if managers is None else [
        {"time": round(event.at, 3), "manager": event.manager_id, "action": event.action, "detail": event.detail}
        for event in managers.events]
    out: Dict[str, Any] = {"events": events}
    if policy is not None:
        out.update(allocate=policy.allocate, scaling=policy.scaling,
                   upper_task_ratio=policy.upper_task_ratio, lower_task_ratio=policy.lower_task_ratio)
    return out


def storage_of(store: Any, address: str) -> Dict[str, Any]:
    if store is None:  # a separate object storage server: the scheduler does not see its contents
        return {"address": address, "in_process": False, "objects": None, "bytes": None, "limit": None}
    return {"address": address, "in_process": True, "objects": len(store), "bytes": store.total_bytes,
            "limit": store.max_bytes}


def build_snapshot(state: Any, *, now: float, wall_time: float, scheduler: Dict[str, Any],
                   rates: Dict[str, float], managers: Any = None, policy: Any = None, store: Any = None,
                   storage_address: str = "") -> Dict[str, Any]:
    """The whole status as a JSON-ready dict.

    ``now`` is the monotonic time the state's timestamps use; ``wall_time`` is ``time.time()``;
    ``scheduler`` holds the process figures (cpu, rss, uptime, ...) measured by the caller.
    """
    waiting = [{"capabilities": ",".join(sorted(needs)), "tasks": count}
               for needs, count in state.waiting_for_capabilities().items()]
    totals = totals_of(state)
    return {
        "version": SNAPSHOT_VERSION,
        "time": round(wall_time, 3),
        "scheduler": scheduler,
        "tasks": task_counts(state),
        "totals": dict(zip(Totals._fields, totals)),
        "rates": {name: round(value, 2) for name, value in rates.items()},
        "workers": worker_rows(state, now),
        "clients": client_rows(state, now),
        "object_storage": storage_of(store, storage_address),
        "managers": manager_rows(managers, now),
        "scaling": scaling_of(managers, policy),
        "waiting_for_capabilities": waiting,
    }
