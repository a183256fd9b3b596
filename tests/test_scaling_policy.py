"""Scaling decisions and policy strings: pure functions, tested on their own."""

import pytest

from scaler.config.policy import Policy, parse_policy
from scaler.scheduler.scaling import IDLE_GRACE_SECONDS, REFUSAL_BACKOFF_SECONDS, ManagerView, WorkerView, decide

VANILLA = Policy(scaling="vanilla")
NOW = 1000.0


def worker(name, tasks=0, manager="m", group=True, idle_for=None, draining=False):
    idle_since = None if tasks else NOW - (idle_for if idle_for is not None else 100.0)
    return WorkerView(name.encode(), manager, name if group else "", tasks, idle_since, draining)


def manager(name="m", capacity=-1, groups=0, pending=0, refused_at=None):
    return ManagerView(name, capacity, groups, pending, refused_at)


def test_policy_no_never_asks_anything():
    d = decide(Policy(scaling="no"), NOW, 500, [], [manager()])
    assert d.starts == [] and d.drain == [] and d.stops == []


def test_scale_up_from_zero_sizes_the_pool_from_the_task_count():
    assert decide(VANILLA, NOW, 1, [], [manager()]).starts == ["m"]
    assert decide(VANILLA, NOW, 35, [], [manager()]).starts == ["m"] * 4  # ceil(35 / 10)
    assert decide(VANILLA, NOW, 35, [], [manager(capacity=2)]).starts == ["m"] * 2


def test_scale_up_counts_pending_starts_and_respects_the_ratio():
    workers = [worker("a", 5), worker("b", 5)]
    assert decide(VANILLA, NOW, 20, workers, [manager(groups=2)]).starts == []  # 10 per worker: not above
    assert decide(VANILLA, NOW, 41, workers, [manager(groups=2)]).starts == ["m"] * 3
    assert decide(VANILLA, NOW, 41, workers, [manager(groups=2, pending=3)]).starts == []


def test_managers_are_asked_in_connection_order_and_fixed_pools_never():
    managers = [manager("fixed", capacity=0), manager("first", capacity=2), manager("second", capacity=-1)]
    assert decide(VANILLA, NOW, 50, [], managers).starts == ["first", "first", "second", "second", "second"]


def test_a_manager_that_refused_is_skipped_for_a_while():
    refused = manager("a", refused_at=NOW - 1)
    assert decide(VANILLA, NOW, 5, [], [refused, manager("b")]).starts == ["b"]
    later = manager("a", refused_at=NOW - REFUSAL_BACKOFF_SECONDS - 1)
    assert decide(VANILLA, NOW, 5, [], [later, manager("b")]).starts == ["a"]


def test_scale_down_to_zero_takes_idle_workers_after_the_grace_period():
    workers = [worker("a"), worker("b"), worker("c", idle_for=IDLE_GRACE_SECONDS / 2)]
    d = decide(VANILLA, NOW, 0, workers, [manager(groups=3)])
    assert sorted(d.drain) == [b"a", b"b"] and d.starts == []


def test_scale_down_never_picks_fixed_workers_and_drains_busy_ones_only_when_needed():
    policy = Policy(scaling="vanilla", lower_task_ratio=2)
    fixed = worker("f", tasks=1, manager="pool", group=False)
    busy = [worker("a", tasks=1), worker("b", tasks=2)]
    d = decide(policy, NOW, 3, [fixed] + busy, [manager("pool", capacity=0), manager("m", groups=2)])
    assert d.drain == [b"a"]  # target ceil(3 / 2) = 2 of 3: the least loaded managed worker drains
    assert decide(policy, NOW, 0, [fixed], [manager("pool", capacity=0)]).drain == []


def test_drained_empty_workers_are_stopped_and_busy_drained_ones_are_taken_back():
    d = decide(VANILLA, NOW, 0, [worker("a", draining=True), worker("b", tasks=3, draining=True)], [manager(groups=2)])
    assert d.stops == [("m", "a")]
    d = decide(VANILLA, NOW, 100, [worker("b", tasks=3, draining=True)], [manager(groups=1)])
    assert d.undrain == [b"b"] and len(d.starts) == 9


def test_policy_strings():
    assert parse_policy("allocate=even_load; scaling=no") == Policy()
    p = parse_policy(" scaling = vanilla ;upper_task_ratio=4; lower_task_ratio=0.5;")
    assert (p.scaling, p.upper_task_ratio, p.lower_task_ratio) == ("vanilla", 4.0, 0.5)
    assert parse_policy(str(p)) == p


@pytest.mark.parametrize("text, words", [
    ("scaling=fast", ["scaling=fast", "no, vanilla"]),
    ("allocate=random", ["allocate=random", "even_load"]),
    ("speed=1", ["unknown key 'speed'", "valid keys", "upper_task_ratio"]),
    ("scaling", ["not key=value"]),
    ("scaling=vanilla; scaling=no", ["given twice"]),
    ("upper_task_ratio=ten", ["not a number"]),
    ("upper_task_ratio=1; lower_task_ratio=2", ["lower_task_ratio < upper_task_ratio"]),
])
def test_malformed_policies_say_what_is_valid(text, words):
    with pytest.raises(ValueError) as info:
        parse_policy(text)
    for word in words:
        assert word in str(info.value)


def test_tasks_waiting_for_a_capability_ask_a_manager_whose_workers_have_it():
    plain = ManagerView("plain", -1, 0, 0, None)
    gpus = ManagerView("gpus", 2, 0, 0, None, frozenset({"gpu", "linux"}))
    missing = {frozenset({"gpu"}): 7}
    decision = decide(VANILLA, NOW, 0, [], [plain, gpus], missing)
    assert decision.starts == ["gpus"]  # one group, from the manager that can run them
    waiting = ManagerView("gpus", 2, 0, 1, None, frozenset({"gpu"}))
    assert decide(VANILLA, NOW, 0, [], [plain, waiting], missing).starts == []  # one is on its way
    assert decide(VANILLA, NOW, 0, [], [plain], missing).starts == []  # nobody can: nothing to ask
    assert decide(Policy(scaling="no"), NOW, 0, [], [gpus], missing).starts == []
