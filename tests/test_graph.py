"""Task graph planning and argument templates (scaler.utility.graph): pure functions, tested on their own.

``run`` plays client and processor: it pickles every node as it would be shipped, then runs it
with the results of its dependencies, in plan order.
"""

import copy
import operator
import pickle
import sys

import pytest

from scaler.utility.graph import CycleError, GraphPlan, MissingKeyError, Ref, materialize, plan_graph


def leaf(i):
    return i


def inc(x):
    return x + 1


def add(*xs):
    return sum(xs)


def ident(x):
    return x


def pack(*xs):
    return xs


def apply(function, *args):
    return function(*args)


CALLS = []


def record(x):
    CALLS.append(x)
    return x


def make_task_tuple():
    return (inc, 1)


def run(plan: GraphPlan):
    results = {}
    for node in plan.nodes:
        node = pickle.loads(pickle.dumps(node))
        assert all(dep in results for dep in node.deps), "dependencies must come first"
        results[node.key] = node.function(*materialize(node.args, [results[dep] for dep in node.deps]))
    return plan.shape(results)


def get(graph, keys):
    return run(plan_graph(graph, keys))


# --- literals and references ---------------------------------------------------------------


def test_a_literal_that_is_no_key_is_data():
    plan = plan_graph({"a": (leaf, 0)}, "a")
    assert [(n.key, n.deps, n.args) for n in plan.nodes] == [("a", (), (0,))]
    assert run(plan) == 0


def test_int_keys_are_references_and_other_ints_literals():
    graph = {0: (leaf, 5), 1: (add, 0, 10), 2: (add, 1, 0, 7)}
    assert get(graph, 2) == (5 + 10) + 5 + 7
    assert plan_graph(graph, 1).nodes[-1].args == (Ref(0), 10)


def test_bool_and_float_never_refer_to_an_int_key():
    graph = {1: (leaf, 100), "t": (pack, True, 1.0, 1, False), "alias_true": True}
    assert get(graph, "t") == (True, 1.0, 100, False)
    plan = plan_graph(graph, "alias_true")
    assert plan.nodes == [] and plan.literal_results == {"alias_true": True}
    assert get(graph, "alias_true") is True


def test_tuple_keys():
    graph = {("x", 1): (leaf, 3), ("x", 2): (inc, ("x", 1)), "y": (pack, ("x", True), ["x", 1], ("x", 1.0))}
    assert get(graph, ("x", 2)) == 4
    # same values, other types: literals, not the key ("x", 1)
    assert get(graph, "y") == (("x", True), ["x", 1], ("x", 1.0))
    assert plan_graph(graph, "y").nodes[0].deps == ()


def test_tuple_key_inside_structures_and_as_alias():
    graph = {("x", 0): (leaf, 7), "l": (ident, [("x", 0), {"k": ("x", 0)}]), "al": ("x", 0)}
    assert get(graph, ["l", "al"]) == [[7, {"k": 7}], 7]


def test_a_callable_literal_argument_is_not_a_nested_task():
    assert get({"a": (leaf, 4), "b": (apply, str, "a")}, "b") == "4"
    assert get({"b": (apply, inc, 1)}, "b") == 2


def test_a_string_that_is_no_key_is_a_literal():
    assert get({"a": (str.upper, "nokey")}, "a") == "NOKEY"


def test_unhashable_arguments_are_walked_not_looked_up():
    graph = {"a": (leaf, 1), "b": (pack, ("a", [1]), {"s": {1, 2}})}
    assert get(graph, "b") == ((1, [1]), {"s": {1, 2}})


# --- nested structures and nested tasks -----------------------------------------------------------


def test_nested_list_tuple_dict_arguments_keep_their_types():
    graph = {
        "a": (leaf, 1),
        "b": (leaf, 2),
        "c": (pack, ["a", ("b", 3), {"a": "b", "k": ["a", "zz"]}], ("a",)),
    }
    assert get(graph, "c") == ([1, (2, 3), {"a": 2, "k": [1, "zz"]}], (1,))
    node = plan_graph(graph, "c").nodes[-1]
    assert node.deps == ("a", "b")


def test_deps_are_distinct_in_first_use_order():
    node = plan_graph({"a": (leaf, 1), "b": (leaf, 2), "c": (add, "b", "a", "b", ["a"])}, "c").nodes[-1]
    assert node.deps == ("b", "a")
    assert node.args[:3] == (Ref(0), Ref(1), Ref(0))


def test_nested_task_tuples_are_evaluated_inline():
    graph = {"a": (leaf, 1), "b": (add, (inc, "a"), (inc, (inc, 10)))}
    assert get(graph, "b") == 2 + 12
    graph = {"a": (leaf, 1), "b": (pack, [(inc, "a"), {"k": (add, "a", 1)}], (inc, 0))}
    assert get(graph, "b") == ([2, {"k": 2}], 1)
    plan = plan_graph(graph, "b")
    assert [n.key for n in plan.nodes] == ["a", "b"]  # nested tasks are not nodes


def test_nested_task_with_only_literals_runs_on_the_processor_not_at_plan_time():
    del CALLS[:]
    plan = plan_graph({"b": (ident, (record, [1]))}, "b")
    assert CALLS == []
    assert materialize(plan.nodes[0].args, []) == ([1],) and CALLS == [[1]]


def test_a_dependency_result_is_never_evaluated_or_walked():
    graph = {"a": (make_task_tuple,), "b": (ident, "a"), "c": (pack, ["a"])}
    assert get(graph, ["b", "c"]) == [(inc, 1), ([(inc, 1)],)]


# --- data nodes ------------------------------------------------------------------------------------


def test_data_nodes_are_inlined_and_returned_without_a_task():
    data = [1, 2, [3]]
    graph = {"d": data, "n": 5, "b": (pack, "d", "n"), "e": ()}
    plan = plan_graph(graph, ["b", "d", "e"])
    assert [n.key for n in plan.nodes] == ["b"]
    assert plan.nodes[0].deps == ()
    assert plan.literal_results == {"d": data, "e": ()}
    assert plan.literal_results["d"] is data
    assert run(plan) == [(data, 5), data, ()]


def test_top_level_list_with_references_is_a_node():
    graph = {"a": (leaf, 1), "l": ["a", 2, ("a", "zz"), (inc, "a")], "m": (ident, "l")}
    plan = plan_graph(graph, ["l", "m"])
    assert [n.key for n in plan.nodes] == ["a", "l", "m"]
    assert run(plan) == [[1, 2, (1, "zz"), 2], [1, 2, (1, "zz"), 2]]


def test_top_level_list_of_data_references_is_data():
    graph = {"x": 3, "l": ["x", 4], "t": (ident, "l")}
    plan = plan_graph(graph, ["l", "t"])
    assert plan.literal_results == {"l": [3, 4]}
    assert [n.key for n in plan.nodes] == ["t"]
    assert run(plan) == [[3, 4], [3, 4]]


def test_top_level_dict_values_are_walked_like_arguments():
    graph = {"a": (leaf, 1), "d": {"a": "a", "b": [(inc, "a")]}}
    assert get(graph, "d") == {"a": 1, "b": [2]}


def test_top_level_list_with_a_nested_task_but_no_reference_is_a_node():
    plan = plan_graph({"l": [(inc, 1), 5]}, "l")
    assert [(n.key, n.deps) for n in plan.nodes] == [("l", ())]
    assert run(plan) == [2, 5]


# --- aliases ------------------------------------------------------------------------------------


def test_alias_and_alias_chains_resolve_to_the_real_node():
    graph = {"a": (leaf, 1), "b": "a", "c": "b", "d": (inc, "c")}
    plan = plan_graph(graph, ["c", "d", "b"])
    assert [n.key for n in plan.nodes] == ["a", "d"]
    assert plan.nodes[1].deps == ("a",)
    assert plan.requested == ("a", "d")
    assert run(plan) == [1, 2, 1]


def test_alias_to_data():
    graph = {"a": 42, "b": "a", "c": "b"}
    plan = plan_graph(graph, "c")
    assert plan.nodes == [] and plan.requested == ("a",) and plan.literal_results == {"a": 42}
    assert run(plan) == 42


def test_alias_to_a_missing_string_key_is_the_string():
    # indistinguishable from a literal: it is one, as an argument would be
    plan = plan_graph({"b": "nokey"}, "b")
    assert plan.literal_results == {"b": "nokey"}


def test_alias_to_a_missing_tuple_key_is_rejected():
    with pytest.raises(KeyError, match=r"'b'.*\('x', 1\).*nor a key of the graph"):
        plan_graph({"b": ("x", 1), "c": (inc, 1)}, "b")
    with pytest.raises(ValueError):
        plan_graph({"b": ("x", 1)}, "b")
    with pytest.raises(MissingKeyError):
        plan_graph({"a": (inc, "b"), "b": ("x", ("y", 2))}, "a")


# --- validation --------------------------------------------------------------------------------


def _cycle_of(excinfo):
    assert isinstance(excinfo.value, ValueError)
    if sys.version_info >= (3, 9):
        import graphlib

        assert isinstance(excinfo.value, graphlib.CycleError)
    return excinfo.value.args[1]


def test_self_loop():
    with pytest.raises(CycleError, match="'a' -> 'a'") as excinfo:
        plan_graph({"a": (inc, "a")}, "a")
    assert _cycle_of(excinfo) == ["a", "a"]
    with pytest.raises(CycleError, match="'a'"):
        plan_graph({"a": "a"}, "a")


def test_two_cycle_names_its_keys():
    with pytest.raises(CycleError) as excinfo:
        plan_graph({"x": (leaf, 1), "a": (add, "x", "b"), "b": (inc, "a")}, "a")
    assert _cycle_of(excinfo) == ["a", "b", "a"]
    assert "'a' -> 'b' -> 'a'" in str(excinfo.value)


def test_long_cycle_found_iteratively():
    n = 5000
    graph = {i: (inc, i + 1) for i in range(n)}
    graph[n] = (inc, 0)
    with pytest.raises(CycleError) as excinfo:
        plan_graph(graph, 0)
    assert _cycle_of(excinfo) == list(range(n + 1)) + [0]


def test_cycle_through_an_alias():
    with pytest.raises(CycleError) as excinfo:
        plan_graph({"a": (inc, "b"), "b": "c", "c": "a"}, "a")
    assert _cycle_of(excinfo) == ["a", "b", "c", "a"]
    with pytest.raises(CycleError):
        plan_graph({"a": "b", "b": "a"}, "a")


def test_cycle_through_a_nested_structure():
    with pytest.raises(CycleError):
        plan_graph({"a": (ident, [{"k": (inc, "b")}]), "b": ["a"]}, "b")


def test_non_callable_tuple_head_is_rejected_naming_the_key():
    with pytest.raises(ValueError, match=r"'bad'.*\(3, 4\).*first element 3 is not callable"):
        plan_graph({"bad": (3, 4), "ok": (inc, "bad")}, "ok")
    with pytest.raises(ValueError, match="'bad'.*first element None is not callable"):
        plan_graph({"bad": (None, inc)}, "bad")
    with pytest.raises(ValueError, match="'bad'"):
        plan_graph({"bad": ([1], inc)}, "bad")


def test_missing_requested_key():
    graph = {"a": (leaf, 1)}
    with pytest.raises(KeyError, match="'nope'"):
        plan_graph(graph, "nope")
    with pytest.raises(KeyError, match="'nope'"):
        plan_graph(graph, ["a", ["nope"]])
    with pytest.raises(KeyError):
        plan_graph(graph, {"a": 1})  # unhashable: no such key


# --- culling, order, shapes -----------------------------------------------------------------------


def test_culling_drops_what_the_requested_keys_do_not_need():
    graph = {
        "a": (leaf, 1),
        "b": (inc, "a"),
        "unused": (inc, "a"),
        "broken_unused": (1, 2),  # never needed: never checked
        "cyclic_unused": (inc, "cyclic_unused"),
    }
    plan = plan_graph(graph, "b")
    assert [n.key for n in plan.nodes] == ["a", "b"]


def test_order_is_topological_and_each_node_appears_once():
    graph = {"d": (add, "b", "c"), "b": (inc, "a"), "c": (inc, "a"), "a": (leaf, 1)}
    plan = plan_graph(graph, ["d", "c"])
    keys = [n.key for n in plan.nodes]
    assert sorted(keys) == ["a", "b", "c", "d"]
    position = {key: i for i, key in enumerate(keys)}
    for node in plan.nodes:
        assert all(position[dep] < position[node.key] for dep in node.deps)
    assert run(plan) == [4, 2]


def test_requested_shapes():
    graph = {"a": (leaf, 1), "b": (inc, "a"), "c": 10, ("t", 0): (leaf, "tuple")}
    assert get(graph, "a") == 1
    assert get(graph, ("t", 0)) == "tuple"
    assert get(graph, ["a"]) == [1]
    assert get(graph, ["a", "c", ["b", ["c", "a"]], []]) == [1, 10, [2, [10, 1]], []]
    plan = plan_graph(graph, ["b", "b", ["a", "b"]])
    assert plan.requested == ("b", "a")
    assert run(plan) == [2, 2, [1, 2]]
    empty = plan_graph(graph, [])
    assert empty.nodes == [] and empty.requested == () and run(empty) == []


def test_requested_keys_are_looked_up_like_a_dict_does():
    assert get({1: (leaf, "one")}, [1, 1.0]) == ["one", "one"]


# --- scale ------------------------------------------------------------------------------------------


def test_ten_thousand_node_chain_needs_no_recursion():
    n = 10_000
    graph = {0: (leaf, -1)}  # (leaf, 0) would be a self-loop: 0 is a key
    graph.update((i, (inc, i - 1)) for i in range(1, n))
    limit = sys.getrecursionlimit()
    plan = plan_graph(graph, n - 1)
    assert sys.getrecursionlimit() == limit
    assert [node.key for node in plan.nodes] == list(range(n))
    assert run(plan) == n - 2


def test_ten_thousand_alias_chain():
    n = 10_000
    graph = {"k0": (leaf, 1)}
    graph.update(("k%d" % i, "k%d" % (i - 1)) for i in range(1, n))
    plan = plan_graph(graph, "k%d" % (n - 1))
    assert [node.key for node in plan.nodes] == ["k0"] and plan.requested == ("k0",)


def test_wide_graph_of_leaves_and_two_input_nodes():
    graph = {"leaf-%d" % i: (leaf, i) for i in range(1000)}
    graph["n-0"] = (operator.add, "leaf-0", "leaf-1")
    for j in range(1, 9000):
        graph["n-%d" % j] = (operator.add, "n-%d" % (j - 1), "leaf-%d" % (j % 1000))
    plan = plan_graph(graph, "n-8999")
    assert len(plan.nodes) == 10_000
    assert run(plan) == 1 + sum(j % 1000 for j in range(1, 9000))


# --- materialize ---------------------------------------------------------------------------------


def test_materialize_leaves_the_template_unchanged():
    graph = {"a": (leaf, 1), "d": [9], "c": (pack, ["a", ("a", {"k": ["a"]})], "d", (inc, "a"), {"x": [1]})}
    node = plan_graph(graph, "c").nodes[-1]
    before = copy.deepcopy(node.args)
    first = materialize(node.args, [1])
    first[0][0] = "mutated"
    first[0][1][1]["k"].append("more")
    second = materialize(node.args, [5])
    assert node.args == before
    assert second == ([5, (5, {"k": [5]})], [9], 6, {"x": [1]})


def test_materialize_substitutes_refs_everywhere():
    template = (Ref(0), [Ref(1), (Ref(0),)], {"k": Ref(1), Ref(0): 1})
    assert materialize(template, ["r0", "r1"]) == ("r0", ["r1", ("r0",)], {"k": "r1", Ref(0): 1})


def test_templates_pickle():
    graph = {"a": (leaf, 1), "b": (pack, ["a", (inc, "a")], {"k": ("a",)}, [1, 2])}
    node = plan_graph(graph, "b").nodes[-1]
    shipped = pickle.loads(pickle.dumps(node.args))
    assert shipped == node.args
    assert materialize(shipped, [1]) == ([1, 2], {"k": (1,)}, [1, 2])
    assert pickle.loads(pickle.dumps(Ref(3))) == Ref(3)
