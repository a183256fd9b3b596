"""Task graphs in the scheduler: validation and the per-node bookkeeping. No I/O.

A graph arrives as one message: its nodes (tasks) and, for each, the indices of the nodes
whose results it needs. A node waits (``WAITING``) until those have finished; each
node's result then sits in object storage under the node's own task id, where the
workers running its dependents fetch it. Results go back to the client only for the keys
it asked for, and an intermediate is freed as soon as no unfinished node needs it.
"""

from typing import List, Optional, Sequence

from ..protocol.messages import pack_indices, unpack_indices  # noqa: F401  (re-exported)


class GraphNode:
    """What the scheduler keeps beside a graph node's Task (``Task.graph``)."""

    __slots__ = ("deps", "dependents", "waiting", "consumers", "requested", "held_result", "result_id")

    def __init__(self, requested: bool) -> None:
        self.deps: List[object] = []  # the Tasks whose results this one needs
        self.dependents: List[object] = []  # the Tasks that need this one's result
        self.waiting = 0  # deps not finished yet
        self.consumers = 0  # dependents not finished yet: the result must stay in storage
        self.requested = requested  # the client wants this result
        self.held_result: Optional[object] = None  # a requested result kept back while dependents read it
        self.result_id: Optional[bytes] = None  # the stored result, once finished


def validate(task_ids: Sequence[bytes], deps: Sequence[Sequence[int]], known: object) -> Optional[str]:
    """Why the graph cannot run, or None. ``known`` holds task ids already in use.

    Checks what a hand-rolled client could get wrong even though ours checks first:
    ids unique and new, every dependency a node of this graph, no cycle (Kahn's order).
    """
    count = len(task_ids)
    if count == 0:
        return "empty graph"
    if len(set(task_ids)) != count:
        return "duplicate task ids in the graph"
    for task_id in task_ids:
        if not task_id or task_id in known:  # type: ignore[operator]
            return "task id %s is empty or already in use" % task_id.hex()
    indegree = [0] * count
    children: List[List[int]] = [[] for _ in range(count)]
    for node, node_deps in enumerate(deps):
        for dep in node_deps:
            if not 0 <= dep < count:
                return "node %s depends on node #%d, which is not in the graph" % (task_ids[node].hex(), dep)
            indegree[node] += 1
            children[dep].append(node)
    ready = [node for node in range(count) if indegree[node] == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for child in children[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if seen != count:
        cycle = next(node for node in range(count) if indegree[node])
        return "the graph has a cycle through node %s" % task_ids[cycle].hex()
    return None
