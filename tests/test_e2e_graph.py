"""client.get: Dask-style task graphs, end to end (real scheduler, workers, object storage)."""

import os
import time

import pytest

from e2e_support import wait_until
from scaler import Client
from scaler.client.agent import RemoteTraceback
from scaler.utility.graph import CycleError

TIMEOUT = 120


# --- task functions (module level: workers import them by name) ---------------------------

def inc(x):
    return x + 1


def add(a, b):
    return a + b


def total(values):
    return sum(values)


def describe(mapping, pair):
    return sorted(mapping.items()), pair


def fail(x):
    raise ArithmeticError("node failed on %r" % (x,))


def slow_root(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(120)
    return 1


def graph_inside_a_task(n):
    with Client() as client:
        return client.get({"a": n, "b": (inc, "a"), "c": (add, "a", "b")}, "c")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


GRAPH = {"a": 1, "b": (inc, "a"), "c": (add, "a", "b"), "d": (total, ["a", "b", "c", 10]),
         "e": (describe, {"x": "a", "y": [("b", 0)]}, ("c", "literal"))}


# --- results and their shape ----------------------------------------------------------

def test_one_key_a_list_and_a_nested_list_come_back_in_their_shape(client):
    assert client.get(GRAPH, "d") == 1 + 2 + 3 + 10
    assert client.get(GRAPH, ["c", "b"]) == [3, 2]
    assert client.get(GRAPH, [["a"], ["b", ["c"]]]) == [[1], [2, [3]]]


def test_keys_nest_in_lists_tuples_and_dicts_and_other_values_are_data(client):
    assert client.get(GRAPH, "e") == ([("x", 1), ("y", [(2, 0)])], (3, "literal"))


def test_a_literal_equal_to_no_key_is_data(client):
    # upstream 2.9 raises KeyError: 0 here
    assert client.get({"leaf": (inc, 0), "x": (add, "leaf", 41)}, "x") == 42


def test_block_false_returns_futures_in_the_same_shape(client):
    futures = client.get(GRAPH, ["c", ["a", "d"]], block=False)
    assert [futures[0].result(timeout=TIMEOUT), [f.result(timeout=TIMEOUT) for f in futures[1]]] == [3, [1, 16]]


def test_a_priority_is_accepted_and_checked(client):
    assert client.get(GRAPH, "c", priority=5) == 3
    with pytest.raises(TypeError, match="priority"):
        client.get(GRAPH, "c", priority="high")


def test_a_ten_thousand_node_graph(client):
    n = 5000
    graph = {("x", i): (inc, i) for i in range(n)}
    graph.update({("y", i): (add, ("x", i), ("x", i + 1)) for i in range(n - 1)})
    graph["total"] = (total, [("y", i) for i in range(n - 1)])
    assert len(graph) == 10000
    expected = sum((i + 1) + (i + 2) for i in range(n - 1))
    assert client.get(graph, "total") == expected
    assert client.get(graph, [("y", 0), ("y", n - 2)]) == [3, 2 * n - 1]


def test_a_graph_inside_a_task(client):
    assert client.submit(graph_inside_a_task, 4).result(timeout=TIMEOUT) == 9


# --- rejected before anything runs -------------------------------------------------------

@pytest.mark.parametrize("graph, keys, error, words", [
    ({"a": (inc, "b"), "b": (inc, "a")}, "a", CycleError, "cycle"),
    ({"a": (inc, "a")}, "a", ValueError, "a"),
    ({"a": (add, "b", 1)}, "missing", KeyError, "missing"),
    ({"a": (inc, "b"), "b": ("not callable", 1)}, "a", ValueError, "b"),
])
def test_a_bad_graph_is_refused_before_anything_runs(client, graph, keys, error, words):
    with pytest.raises(error, match=words):
        client.get(graph, keys)
    assert client.get(GRAPH, "c") == 3  # nothing registered, nothing stuck


def test_a_graph_the_scheduler_refuses_ends_its_futures_with_a_value_error(client):
    # Bypass the client's own check: the scheduler checks again, registers nothing, answers.
    from scaler.utility.graph import GraphNode, GraphPlan, Ref
    cyclic = GraphPlan([GraphNode("a", ("b",), inc, (Ref(0),)), GraphNode("b", ("a",), inc, (Ref(0),))],
                       ("a", "b"), {}, ["a", "b"])
    futures = client._submit_graph(cyclic, 0)
    for future in futures.values():
        with pytest.raises(ValueError, match="cycle"):
            future.result(timeout=TIMEOUT)
    assert client.get(GRAPH, "c") == 3


def test_a_cycle_is_a_graphlib_cycle_error_where_graphlib_exists(client):
    graphlib = pytest.importorskip("graphlib")
    with pytest.raises(graphlib.CycleError):
        client.get({"a": (inc, "b"), "b": (inc, "a")}, "a")


# --- failures and cancellation --------------------------------------------------------------

def test_a_failing_node_fails_its_downstream_and_unrelated_branches_finish(client):
    graph = {"bad": (fail, 1), "after": (inc, "bad"), "later": (add, "after", 1),
             "good": (inc, 1), "fine": (add, "good", 1)}
    later, fine = client.get(graph, ["later", "fine"], block=False)
    with pytest.raises(ArithmeticError, match="node failed on 1") as info:
        later.result(timeout=TIMEOUT)
    cause = info.value.__cause__  # the original traceback, from the worker that ran "bad"
    assert isinstance(cause, RemoteTraceback) and "in fail" in str(cause) and "node failed on 1" in str(cause)
    assert fine.result(timeout=TIMEOUT) == 3
    with pytest.raises(ArithmeticError):
        client.get(graph, "after")


def test_cancelling_the_futures_cancels_the_pending_nodes(make_combo, tmp_path):
    combo = make_combo(n_workers=2)
    path = str(tmp_path / "root.pid")
    graph = {"root": (slow_root, path), "mid": (inc, "root"), "top": (add, "mid", 1)}
    with Client(combo.get_address()) as client:
        (top,) = client.get(graph, ["top"], block=False)
        wait_until(lambda: os.path.exists(path), 60, "the root node to start")
        with open(path) as f:
            pid = int(f.read())
        assert top.cancel()
        wait_until(lambda: not pid_alive(pid), 60, "the running root node to be stopped")
        assert client.get(GRAPH, "c") == 3


def test_a_client_that_leaves_cancels_its_graph(make_combo, tmp_path):
    combo = make_combo(n_workers=1)
    path = str(tmp_path / "root.pid")
    with Client(combo.get_address()) as client:
        client.get({"root": (slow_root, path), "top": (inc, "root")}, "top", block=False)
        wait_until(lambda: os.path.exists(path), 60, "the root node to start")
    with open(path) as f:
        pid = int(f.read())
    wait_until(lambda: not pid_alive(pid), 60, "the running root node to be stopped")
    with Client(combo.get_address()) as client:
        assert client.get(GRAPH, "c") == 3
