"""The scheduler's table of worker managers and the scaling actions it carries out.

A manager is reached either over a native connection (``ROLE_MANAGER``) or over HTTP
(``--adapter-webhook-urls``); both sit behind the same two calls, ``start_group`` and
``stop_group``, and report back through :meth:`ManagerTable.group_started` /
:meth:`ManagerTable.group_stopped`.
"""

import collections
import itertools
import logging
import time
from typing import Callable, Deque, Dict, FrozenSet, List, NamedTuple, Optional

from ..config.policy import Policy
from .scaling import Decision, ManagerView, WorkerView, decide
from .state import SchedulerState

logger = logging.getLogger(__name__)

PENDING_START_TIMEOUT_SECONDS = 60.0
NO_WORKER_WARNING_SECONDS = 10.0
RECENT_EVENTS = 50  # scaling actions kept for the monitor


class ScalingEvent(NamedTuple):
    """One scaling action or refusal, as the monitor shows it."""

    at: float  # time.time()
    manager_id: str
    action: str  # start, started, start_refused, drain, undrain, stop, stopped, stop_failed, manager_refused, ...
    detail: str


class ManagerRecord:
    def __init__(self, manager_id: str, capacity: int, mode: str, start: Callable[[int], None],
                 stop: Callable[[str], None], via: str, capabilities: FrozenSet[str] = frozenset()) -> None:
        self.manager_id = manager_id
        self.capabilities = capabilities  # the capability names of the workers it starts
        self.capacity = capacity
        self.mode = mode
        self.start = start  # start(request_id): ask for one group
        self.stop = stop  # stop(group_id)
        self.via = via  # "native" or the webhook URL
        self.groups: Dict[str, Optional[bytes]] = {}  # group id -> its worker once connected
        self.stopping: Dict[str, float] = {}  # group id -> when we asked
        self.pending: Dict[int, float] = {}  # start request id -> when we asked
        self.refused_at: Optional[float] = None

    def view(self) -> ManagerView:
        return ManagerView(self.manager_id, self.capacity, len(self.groups), len(self.pending), self.refused_at,
                           self.capabilities)


class ManagerTable:
    def __init__(self, state: SchedulerState, policy: Policy, on_change: Callable[[], None]) -> None:
        self.state = state
        self.policy = policy
        self.on_change = on_change  # called when workers become available again (undrain)
        self.managers: Dict[str, ManagerRecord] = {}  # in connection order
        self._request_ids = itertools.count(1)
        self._waiting_since: Optional[float] = None
        self._last_warning = 0.0
        self.events: Deque[ScalingEvent] = collections.deque(maxlen=RECENT_EVENTS)

    def _event(self, manager_id: str, action: str, detail: str = "") -> None:
        self.events.append(ScalingEvent(time.time(), manager_id, action, detail))

    # --- registration ---
    def add(self, record: ManagerRecord) -> Optional[str]:
        """Register a manager; return a reason to refuse it."""
        if not record.manager_id:
            self._event("", "manager_refused", "empty worker_manager_id")
            return "empty worker_manager_id"
        if record.manager_id in self.managers:
            self._event(record.manager_id, "manager_refused", "id already connected")
            return "worker_manager_id %r is already connected" % record.manager_id
        self.managers[record.manager_id] = record
        self._event(record.manager_id, "manager_connected", "%s, capacity %s" % (
            record.mode, "unlimited" if record.capacity < 0 else record.capacity))
        logger.info("worker manager %s connected (%s, capacity %s, via %s)", record.manager_id, record.mode,
                    "unlimited" if record.capacity < 0 else record.capacity, record.via)
        if record.capacity != 0 and self.policy.scaling == "no":
            logger.warning("worker manager %s can start workers, but the scaling policy is 'no', so it will "
                           "never be asked to: tasks wait until a worker connects. Start the scheduler with "
                           "--policy-content 'allocate=even_load; scaling=vanilla' to scale.", record.manager_id)
        return None

    def remove(self, manager_id: str, reason: str) -> None:
        record = self.managers.pop(manager_id, None)
        if record is not None:
            self._event(manager_id, "manager_left", reason)
            logger.info("worker manager %s left: %s", manager_id, reason)

    # --- reports from managers ---
    def group_started(self, manager_id: str, request_id: int, ok: bool, group_id: str, reason: str) -> None:
        record = self.managers.get(manager_id)
        if record is None or record.pending.pop(request_id, None) is None:
            return
        if ok:
            record.groups[group_id] = None
            worker = self.state.worker_named(group_id)  # its worker may have connected first
            if worker is not None:
                self.state.set_group(worker.worker_id, group_id)
                record.groups[group_id] = worker.worker_id
            self._event(manager_id, "started", group_id)
            logger.info("worker manager %s started worker group %s", manager_id, group_id)
        else:
            record.refused_at = time.monotonic()
            self._event(manager_id, "start_refused", reason)
            logger.warning("worker manager %s refused to start a worker group: %s", manager_id, reason)

    def group_stopped(self, manager_id: str, group_id: str, ok: bool, unknown: bool, reason: str) -> None:
        """``unknown``: the manager has no such group (any more): it is gone either way."""
        record = self.managers.get(manager_id)
        if record is None:
            return
        record.stopping.pop(group_id, None)
        if ok or unknown:
            record.groups.pop(group_id, None)
            self._event(manager_id, "stopped", group_id)
            logger.info("worker manager %s shut down worker group %s", manager_id, group_id)
        else:
            self._event(manager_id, "stop_failed", "%s: %s" % (group_id, reason))
            logger.warning("worker manager %s could not shut down group %s: %s", manager_id, group_id, reason)

    def worker_disconnected(self, worker_id: bytes, group_id: str) -> None:
        """A group's worker left without being asked: the group is gone (its slot is free again).

        Native managers also report this, but a manager driven over HTTP cannot, and a
        dead group must not keep counting against the manager's capacity.
        """
        if not group_id:
            return
        for record in self.managers.values():
            if record.groups.get(group_id) == worker_id and group_id not in record.stopping:
                del record.groups[group_id]
                logger.info("worker group %s of manager %s lost its worker", group_id, record.manager_id)
                return

    def worker_connected(self, worker_id: bytes, name: str) -> None:
        for record in self.managers.values():
            if name in record.groups:
                record.groups[name] = worker_id
                self.state.set_group(worker_id, name)
                return

    # --- the periodic decision ---
    def tick(self, now: float) -> Decision:
        self._expire(now)
        workers = [WorkerView(w.worker_id, w.manager_id, w.group_id, len(w.tasks), w.idle_since, w.draining)
                   for w in self.state.workers.values()]
        managers = [m.view() for m in self.managers.values()]
        decision = decide(self.policy, now, len(self.state.tasks), workers, managers,
                          self.state.waiting_for_capabilities())
        for manager_id in decision.starts:
            record = self.managers[manager_id]
            request_id = next(self._request_ids)
            record.pending[request_id] = now
            self._event(manager_id, "start", "asked for a worker group (%d task(s) in the scheduler)"
                        % len(self.state.tasks))
            record.start(request_id)
        for worker_id in decision.drain:
            self.state.set_draining(worker_id, True)
            self._event(self._manager_of(worker_id), "drain", self._worker_name(worker_id))
        for worker_id in decision.undrain:
            self.state.set_draining(worker_id, False)
            self._event(self._manager_of(worker_id), "undrain", self._worker_name(worker_id))
        if decision.undrain:
            self.on_change()
        for manager_id, group_id in decision.stops:
            record = self.managers.get(manager_id)
            if record is None or group_id in record.stopping or group_id not in record.groups:
                continue
            record.stopping[group_id] = now
            self._event(manager_id, "stop", group_id)
            record.stop(group_id)
        self._warn_if_stuck(now)
        return decision

    def _expire(self, now: float) -> None:
        for record in self.managers.values():
            for request_id, asked in list(record.pending.items()):
                if now - asked > PENDING_START_TIMEOUT_SECONDS:
                    del record.pending[request_id]
                    record.refused_at = now
                    self._event(record.manager_id, "start_refused", "no answer within %.0fs"
                                % PENDING_START_TIMEOUT_SECONDS)
                    logger.warning("worker manager %s did not answer a start request within %.0fs",
                                   record.manager_id, PENDING_START_TIMEOUT_SECONDS)
            for group_id, asked in list(record.stopping.items()):
                if now - asked > PENDING_START_TIMEOUT_SECONDS:
                    del record.stopping[group_id]

    def _manager_of(self, worker_id: bytes) -> str:
        worker = self.state.workers.get(worker_id)
        return worker.manager_id if worker is not None else ""

    def _worker_name(self, worker_id: bytes) -> str:
        worker = self.state.workers.get(worker_id)
        return worker.name if worker is not None else worker_id.hex()[:12]

    def _warn_if_stuck(self, now: float) -> None:
        """Say so when tasks wait and nothing can run them (the upstream silent hang)."""
        waiting = self.state.waiting_without_worker()
        if not waiting:
            self._waiting_since = None
            return
        if self._waiting_since is None:
            self._waiting_since = now
        if now - self._waiting_since < NO_WORKER_WARNING_SECONDS or now - self._last_warning < NO_WORKER_WARNING_SECONDS:
            return
        self._last_warning = now
        if not self.managers:
            why = "no worker is connected and no worker manager either"
        elif self.policy.scaling == "no":
            why = "no worker is connected and the scaling policy is 'no', so no manager is asked for one"
        else:
            why = "no worker is connected yet; worker managers were asked"
        logger.warning("%d task(s) have waited %.0fs: %s", waiting, now - self._waiting_since, why)
        self._event("", "no_worker", "%d task(s) have waited %.0fs: %s" % (waiting, now - self._waiting_since, why))
