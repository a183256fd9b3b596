"""Dask-style task graphs: plan them on the client, fill in their arguments on the processor.

A graph is ``{key: value}``. A value is data, or a task tuple ``(callable, arg, ...)``. An
argument is a key of the graph (a reference to its result), a list/tuple/dict (dict values
only) nesting arguments, a nested task tuple (evaluated inline where it is needed), or a
literal. A top-level value that is exactly a key is an alias of that key; a top-level
list/dict holding references or nested tasks is computed element-wise.

``plan_graph`` validates, culls and orders a graph without running anything, and turns
every task into ``function`` + an argument template in which references are ``Ref(i)``
placeholders, so that the template can be shipped alone and the results of ``node.deps``
fetched separately. ``materialize`` fills a template in, on the processor::

    result = node.function(*materialize(node.args, [results[key] for key in node.deps]))

An argument is a reference only when it is hashable, of a key type (exactly str, bytes,
int, float, or a tuple that is not a task), and equal to a key *of the same type* (tuple
items compared alike): ``True`` or ``1.0`` never refer to key ``1``, and ``0`` is the
literal 0 when 0 is no key. Data reached by a reference is inlined as a literal. Requested
keys are looked up as a dict does (they cannot be literals).

Templates are opaque apart from ``Ref``: nested tasks become explicit call markers, so a
plain tuple in a template is always data (``(apply, str, "a")`` passes ``str``, it does not
call it), and literal containers are wrapped so that they are not rebuilt on every run.

Pure code, iterative over the graph (a 10 000-node chain needs no deep recursion); only
nested argument structures are walked recursively.
"""

import reprlib
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

try:
    from graphlib import CycleError as _BaseCycleError
except ImportError:  # Python 3.8 has no graphlib
    _BaseCycleError = ValueError  # type: ignore[misc,assignment]


class CycleError(_BaseCycleError):  # type: ignore[misc,valid-type]
    """A cycle: a graphlib.CycleError (a ValueError on 3.8) whose message names its keys.

    As in graphlib, ``args[1]`` is the cycle (its first key repeated last); a subclass only so
    that ``str()`` is the message rather than the repr of both arguments.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


__all__ = ["CycleError", "GraphNode", "GraphPlan", "MissingKeyError", "Ref", "materialize", "plan_graph"]


class MissingKeyError(KeyError, ValueError):
    """A top-level tuple shaped like a key but naming no key: a dangling alias, also a bad task."""

    def __str__(self) -> str:  # the message, not KeyError's repr of it
        return str(self.args[0]) if self.args else ""


class Ref:
    """Placeholder for the result of ``node.deps[index]`` in an argument template."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __eq__(self, other: object) -> bool:
        return type(other) is Ref and other.index == self.index  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((Ref, self.index))

    def __repr__(self) -> str:
        return "Ref(%d)" % self.index

    def __reduce__(self) -> Tuple[Any, ...]:
        return Ref, (self.index,)


class _Call:
    """A nested task in a template: explicit, so a plain tuple in a template is always data."""

    __slots__ = ("function", "args")

    def __init__(self, function: Callable, args: tuple) -> None:
        self.function = function
        self.args = args

    def __eq__(self, other: object) -> bool:
        return type(other) is _Call and (other.function, other.args) == (self.function, self.args)  # type: ignore

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "_Call(%r, %r)" % (self.function, self.args)

    def __reduce__(self) -> Tuple[Any, ...]:
        return _Call, (self.function, self.args)


class _Literal:
    """A value materialize returns as is: a container with no reference is not rebuilt per run."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is _Literal and other.value == self.value  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "_Literal(%r)" % (self.value,)

    def __reduce__(self) -> Tuple[Any, ...]:
        return _Literal, (self.value,)


def _build(value: Any) -> Any:
    """The function of a top-level list/dict node: materialize already built the value."""
    return value


class GraphNode:
    """One task of a plan: its result is ``function(*materialize(args, [result of each of deps]))``."""

    __slots__ = ("key", "deps", "function", "args")

    def __init__(self, key: Hashable, deps: Tuple[Hashable, ...], function: Callable, args: tuple) -> None:
        self.key = key
        self.deps = deps
        self.function = function
        self.args = args

    def __repr__(self) -> str:
        return "GraphNode(key=%r, deps=%r, function=%r, args=%r)" % (self.key, self.deps, self.function, self.args)

    def __reduce__(self) -> Tuple[Any, ...]:
        return GraphNode, (self.key, self.deps, self.function, self.args)


class GraphPlan:
    """What to run (``nodes``, dependencies first) and how to answer (``requested``, ``shape``).

    ``requested``: the distinct requested keys after alias resolution, in request order; each
    is either the key of one of ``nodes`` or a key of ``literal_results`` (data: no task).
    """

    __slots__ = ("nodes", "requested", "literal_results", "_shape")

    def __init__(self, nodes: List[GraphNode], requested: Tuple[Hashable, ...],
                 literal_results: Dict[Hashable, Any], shape: Any) -> None:
        self.nodes = nodes
        self.requested = requested
        self.literal_results = literal_results
        self._shape = shape

    def shape(self, results_by_key: Mapping[Hashable, Any]) -> Any:
        """The results in the shape of the ``keys`` given to plan_graph (a key, or nested lists).

        ``results_by_key`` maps node keys to results; data results come from literal_results.
        """
        return self._reshape(self._shape, results_by_key)

    def shape_of(self, values_by_key: Mapping[Hashable, Any]) -> Any:
        """Like :meth:`shape`, with every requested key (data ones too) in ``values_by_key``."""
        def reshape(shape: Any) -> Any:
            if type(shape) is list:
                return [reshape(item) for item in shape]
            return values_by_key[shape]
        return reshape(self._shape)

    def _reshape(self, shape: Any, results_by_key: Mapping[Hashable, Any]) -> Any:
        if type(shape) is list:
            return [self._reshape(item, results_by_key) for item in shape]
        if shape in self.literal_results:
            return self.literal_results[shape]
        return results_by_key[shape]

    def __repr__(self) -> str:
        return "GraphPlan(%d nodes, requested=%r)" % (len(self.nodes), self.requested)


class _Data:
    """Plan-time result of a data node (or of an alias to one): its key and value."""

    __slots__ = ("key", "value")

    def __init__(self, key: Hashable, value: Any) -> None:
        self.key = key
        self.value = value


_MISSING = object()
_WALKED = frozenset((list, tuple, dict, Ref, _Call, _Literal))  # types materialize does not return as is
_DATA, _ALIAS, _TASK, _CONTAINER = range(4)


_REFS = tuple(Ref(index) for index in range(64))  # shared: a template holds mostly small indices


def _same_types(stored: Any, given: Any) -> bool:
    """Equal keys that also agree on type, item by item: ("x", True) is not key ("x", 1)."""
    if type(stored) is not type(given):
        return False
    if type(stored) is tuple:
        return all(_same_types(a, b) for a, b in zip(stored, given))
    return True


def _key_shaped(value: Any) -> bool:
    """Whether a non-task tuple looks like a tuple key (so was meant as a reference)."""
    t = type(value)
    if t is tuple:
        return all(_key_shaped(item) for item in value)
    return t is str or t is bytes or t is int or t is float


def _literal(value: Any) -> Any:
    """A plan-time value as a template: wrapped when materialize would otherwise walk it."""
    return _Literal(value) if type(value) in _WALKED else value


def plan_graph(graph: Mapping[Hashable, Any], keys: Any) -> GraphPlan:
    """Validate, cull and order ``graph`` for ``keys`` (a key, or a possibly nested list of keys).

    Raises before anything runs: KeyError for a requested key not in the graph; CycleError (a
    ValueError) naming the keys of a cycle; ValueError naming the key whose value is a tuple
    with a non-callable head (MissingKeyError, also a KeyError, when that tuple looks like a
    key). Only the nodes the requested keys need are checked and planned.
    """
    canon = {key: key for key in graph}  # equal key -> the graph's own key object, to compare types
    canon_get = canon.get

    def ref(x: Any) -> Any:
        """The graph key ``x`` refers to, or _MISSING when ``x`` is a literal."""
        t = type(x)
        if t is str or t is int or t is bytes or t is float:
            key = canon_get(x, _MISSING)
            if key is _MISSING or type(key) is t:
                return key
            return _MISSING
        if t is tuple and not (x and callable(x[0])):
            try:
                key = canon_get(x, _MISSING)
            except TypeError:  # holds something unhashable: data
                return _MISSING
            if key is _MISSING or key is x or _same_types(key, x):
                return key
        return _MISSING

    def scan(x: Any, out: List[Hashable]) -> None:
        """Append the keys argument ``x`` refers to (nested structures included)."""
        key = ref(x)
        if key is not _MISSING:
            out.append(key)
            return
        t = type(x)
        if t is tuple:
            for item in (x[1:] if x and callable(x[0]) else x):
                scan(item, out)
        elif t is list:
            for item in x:
                scan(item, out)
        elif t is dict:
            for item in x.values():
                scan(item, out)

    def parse(key: Hashable) -> Tuple[int, List[Hashable], Optional[tuple]]:
        """Classify ``graph[key]``: (kind, the distinct keys it refers to, a task's args template or None).

        The template is built here only for the common task (scalar arguments), in one lookup per
        argument, assuming each key referred to is a node; finish() builds all others.
        """
        value = graph[key]
        t = type(value)
        out: List[Hashable] = []
        if t is tuple and value and callable(value[0]):
            # common case first: scalar arguments only, template built here assuming that every
            # key referred to is a node (finish() checks; aliases or data take the general path)
            dep_index: Dict[Hashable, int] = {}
            args = []
            for item in value[1:]:
                t = type(item)
                if t is str or t is int or t is float or t is bytes:
                    found = canon_get(item, _MISSING)
                    if found is not _MISSING and type(found) is t:
                        index = dep_index.get(found)
                        if index is None:
                            index = dep_index[found] = len(dep_index)
                        args.append(_REFS[index] if index < len(_REFS) else Ref(index))
                    else:
                        args.append(item)
                else:
                    break
            else:
                return _TASK, list(dep_index), tuple(args)
            for item in value[1:]:
                scan(item, out)
            return _TASK, list(dict.fromkeys(out)), None
        target = ref(value)
        if target is not _MISSING:
            return _ALIAS, [target], None
        if t is tuple:
            if not value:
                return _DATA, out, None
            message = "graph key %r: its value %s is neither a task (first element %s is not callable)" \
                      " nor a key of the graph" % (key, reprlib.repr(value), reprlib.repr(value[0]))
            raise (MissingKeyError if _key_shaped(value) else ValueError)(message)
        if t is list or t is dict:
            scan(value, out)
            return _CONTAINER, list(dict.fromkeys(out)), None
        return _DATA, out, None

    resolved: Dict[Hashable, Any] = {}  # key -> GraphNode, or _Data for data (aliases share their target's)
    nodes: List[GraphNode] = []

    def dependency(key: Hashable, dep_index: Dict[Hashable, int]) -> Tuple[Any, bool]:
        """A reference to ``key`` as (Ref, True), or as (its value, False) when it is data."""
        target = resolved[key]
        if type(target) is _Data:
            return target.value, False
        index = dep_index.get(target.key)
        if index is None:
            index = dep_index[target.key] = len(dep_index)
        return (_REFS[index] if index < len(_REFS) else Ref(index)), True

    def convert(x: Any, dep_index: Dict[Hashable, int]) -> Tuple[Any, bool]:
        """Argument ``x`` as (template, True) if it needs the processor, else (literal value, False)."""
        key = ref(x)
        if key is not _MISSING:
            return dependency(key, dep_index)
        t = type(x)
        if t is tuple:
            if x and callable(x[0]):
                values, dynamic, _ = convert_items(x[1:], dep_index)
                return _Call(x[0], values if dynamic else tuple(map(_literal, values))), True
            items = x
        elif t is list:
            items = x
        elif t is dict:
            values, dynamic, unchanged = convert_items(x.values(), dep_index)
            if unchanged:
                return x, False
            return dict(zip(x.keys(), values)), dynamic
        else:
            return x, False
        values, dynamic, unchanged = convert_items(items, dep_index)
        if unchanged:
            return x, False
        return t(values), dynamic

    def convert_items(items: Any, dep_index: Dict[Hashable, int]) -> Tuple[tuple, bool, bool]:
        """Converted items (as templates if any is dynamic), whether any is, whether none changed."""
        converted = [convert(item, dep_index) for item in items]
        if any(dynamic for _, dynamic in converted):
            return tuple(v if dynamic else _literal(v) for v, dynamic in converted), True, False
        values = tuple(v for v, _ in converted)
        return values, False, all(v is item for v, item in zip(values, items))

    def finish(key: Hashable, kind: int, deps: List[Hashable], args: Optional[tuple]) -> None:
        """Resolve ``key`` once all it refers to is resolved: as data, alias or node."""
        if kind == _TASK:
            value = graph[key]
            if args is not None:
                for dep in deps:
                    target = resolved[dep]
                    if type(target) is not GraphNode or target.key is not dep:
                        break  # an alias or data: convert again
                else:
                    node = GraphNode(key, tuple(deps), value[0], args)
                    resolved[key] = node
                    nodes.append(node)
                    return
            dep_index: Dict[Hashable, int] = {}
            values, dynamic, _ = convert_items(value[1:], dep_index)
            node = GraphNode(key, tuple(dep_index), value[0], values if dynamic else tuple(map(_literal, values)))
        elif kind == _DATA:
            resolved[key] = _Data(key, graph[key])
            return
        elif kind == _ALIAS:
            resolved[key] = resolved[deps[0]]
            return
        else:
            dep_index = {}
            template, dynamic = convert(graph[key], dep_index)
            if not dynamic:  # refers to data only: is data
                resolved[key] = _Data(key, template)
                return
            node = GraphNode(key, tuple(dep_index), _build, (template,))
        resolved[key] = node
        nodes.append(node)

    state: Dict[Hashable, bool] = {}  # key -> done (False: on the current path)

    def visit(root: Hashable) -> None:
        """Iterative depth-first search: post-order is dependencies first; a key on the path is a cycle."""
        if root in state:
            return
        kind, deps, args = parse(root)
        state[root] = False
        stack = [(root, kind, deps, args, iter(deps))]
        while stack:
            key, kind, deps, args, pending = stack[-1]
            for dep in pending:
                done = state.get(dep)
                if done is None:
                    dep_kind, dep_deps, dep_args = parse(dep)
                    state[dep] = False
                    stack.append((dep, dep_kind, dep_deps, dep_args, iter(dep_deps)))
                    break
                if not done:
                    path = [entry[0] for entry in stack]
                    cycle = path[path.index(dep):] + [dep]
                    raise CycleError("cycle in the task graph: %s" % " -> ".join(map(repr, cycle)), cycle)
            else:
                stack.pop()
                state[key] = True
                finish(key, kind, deps, args)

    def request(key: Any) -> Any:
        """The shape of ``keys`` with each key replaced by its resolved key (lists only nest)."""
        if isinstance(key, list):
            return [request(item) for item in key]
        try:
            stored = canon_get(key, _MISSING)
        except TypeError:
            stored = _MISSING
        if stored is _MISSING:
            raise KeyError(key)
        visit(stored)
        return resolved[stored].key

    shape = request(keys)

    requested: Dict[Hashable, None] = {}
    literal_results: Dict[Hashable, Any] = {}

    def collect(item: Any) -> None:
        if type(item) is list:
            for sub in item:
                collect(sub)
            return
        requested[item] = None
        target = resolved[item]
        if type(target) is _Data:
            literal_results[item] = target.value

    collect(shape)
    return GraphPlan(nodes, tuple(requested), literal_results, shape)


def materialize(template: Any, dep_values: Sequence[Any]) -> Any:
    """A template filled in: ``Ref(i)`` -> ``dep_values[i]``, nested tasks evaluated, containers rebuilt.

    Runs on the processor; the template is not modified. Tuples stay tuples, lists stay lists,
    dicts keep their keys; dependency results are inserted as they are, never walked.
    """
    t = type(template)
    if t is Ref:
        return dep_values[template.index]
    if t is tuple:
        return tuple([materialize(item, dep_values) for item in template])
    if t is list:
        return [materialize(item, dep_values) for item in template]
    if t is _Literal:
        return template.value
    if t is _Call:
        return template.function(*[materialize(item, dep_values) for item in template.args])
    if t is dict:
        return {key: materialize(item, dep_values) for key, item in template.items()}
    return template


def run_node(function: Callable, template: Any, *inputs: Any) -> Any:
    """What a worker runs for one graph node: its function on its filled-in argument template."""
    return function(*materialize(template, inputs))
