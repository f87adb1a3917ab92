"""Where a task runs in a cluster: scheduling strategies and the placement policy. No I/O.

    task ──▶ choose_node(request, strategy, local view, peer views, argument bytes per node)
         ──▶ (node_id, None)  run there (the local id: queue here, maybe wait)
         ──▶ (None, reason)   it can never run anywhere: fail the task with reason

Strategies (``scheduling_strategy=`` of a task or an actor):

- ``"DEFAULT"`` (or None), like Ray's hybrid policy: locality first (the node
  holding the most bytes of the task's arguments, when the task fits there);
  then pack nodes in order (this node first) while they stay at most half
  used; past that, the least used node that fits. A *hot* node (memory use
  above ``LIGHTRAY_HOT_NODE_THRESHOLD`` of RAM, or its store over 90% full)
  gets nothing while another node could run the task. When nothing fits
  now, the task waits here if this node may take it.
- ``"SPREAD"``: round robin over the nodes that could run the task (hot
  nodes only if all are); a node without room now passes its turn to the
  next one that has room.
- ``NodeAffinity(node_id, soft=False)``: on that node, waiting there for room.
  ``soft=True``: anywhere (DEFAULT) when that node is dead, unknown or can never
  fit the task.

Each agent decides for the tasks submitted to it, from its own view of its
peers (their last heartbeats, minus what it sent them since): there is no
central scheduler.
"""
from __future__ import annotations

from .resources import CPU, UNIT

SPREAD = "SPREAD"
DEFAULT = "DEFAULT"
HALF_USED = 0.5
STORE_HOT = 0.9


class NodeAffinity:
    """``scheduling_strategy=NodeAffinity(node_id, soft=False)``: run on that node."""

    __slots__ = ("node_id", "soft")

    def __init__(self, node_id: str, soft: bool = False):
        if not isinstance(node_id, str) or not node_id:
            raise TypeError(f"NodeAffinity needs a node id string (from lightray.nodes() or "
                            f"get_runtime_context().node_id), got {node_id!r}")
        if not isinstance(soft, bool):
            raise TypeError(f"NodeAffinity's soft must be a bool, got {soft!r}")
        self.node_id = node_id
        self.soft = soft

    def __repr__(self):
        return f"NodeAffinity({self.node_id!r}, soft={self.soft})"

    def __eq__(self, other):
        return (isinstance(other, NodeAffinity) and other.node_id == self.node_id
                and other.soft == self.soft)

    def __hash__(self):
        return hash((self.node_id, self.soft))


def encode_strategy(strategy):
    """The strategy as it travels in a task spec: None, "SPREAD" or ("node", id, soft)."""
    if strategy is None or strategy == DEFAULT:
        return None
    if strategy == SPREAD:
        return SPREAD
    if isinstance(strategy, NodeAffinity):
        return ("node", strategy.node_id, strategy.soft)
    raise ValueError(f"unknown scheduling_strategy {strategy!r}: use \"DEFAULT\", \"SPREAD\" "
                     "or lightray.NodeAffinity(node_id, soft=False)")


class NodeView:
    """What an agent knows of one node: resources in units, load, liveness."""

    __slots__ = ("node_id", "address", "alive", "total", "available", "hot", "load")

    def __init__(self, node_id: str, address: str, total: dict, available: dict | None = None,
                 alive: bool = True, hot: bool = False, load: dict | None = None):
        self.node_id = node_id
        self.address = address
        self.alive = alive
        self.total = total                  # units
        self.available = dict(total) if available is None else available
        self.hot = hot
        self.load = load or {}

    def feasible(self, units: dict) -> bool:
        total = self.total
        return all(total.get(name, 0) >= need for name, need in units.items())

    def fits(self, units: dict) -> bool:
        available = self.available
        return all(available.get(name, 0) >= need for name, need in units.items())

    def used_fraction_after(self, units: dict) -> float:
        total = self.total.get(CPU, 0)
        if not total:
            return 0.0
        return 1.0 - (self.available.get(CPU, 0) - units.get(CPU, 0)) / total


def is_hot(memory_fraction: float, threshold: float, store_used: int, store_capacity: int) -> bool:
    return memory_fraction > threshold or (
        store_capacity > 0 and store_used > STORE_HOT * store_capacity)


def to_units(request: dict) -> dict:
    return {name: int(round(amount * UNIT)) for name, amount in request.items()}


def choose_node(units: dict, strategy, local: NodeView, peers: list, arg_bytes: dict,
                turn: int):
    """(node id, None) where the task should go, or (None, why it can never run)."""
    nodes = [local] + sorted((p for p in peers if p.alive), key=lambda v: v.node_id)
    if type(strategy) is tuple:            # ("node", node_id, soft)
        wanted = strategy[1]
        for view in nodes:
            if view.node_id == wanted:
                if view.feasible(units):
                    return wanted, None
                if not strategy[2]:
                    return None, (f"NodeAffinity({wanted!r}) asks for node {wanted}, which "
                                  f"can never fit {_describe(units)} (it has "
                                  f"{_describe(view.total)})")
                break
        else:
            if not strategy[2]:
                return None, (f"NodeAffinity({wanted!r}, soft=False): node {wanted} is dead "
                              "or not part of this cluster")
    feasible = [v for v in nodes if v.feasible(units)]
    if not feasible:
        return None, (f"no node of the cluster can ever fit {_describe(units)} "
                      f"(nodes: {', '.join(_describe(v.total) for v in nodes)})")
    # A hot node gets nothing while a cooler node could run the task.
    pool = [v for v in feasible if not v.hot] or feasible
    if strategy == SPREAD:
        # Each turn belongs to one node, in a fixed order; a node without room
        # now passes its turn to the next one that has room. (Cycling over a
        # list that changes length with every turn would favour some nodes.)
        start = turn % len(pool)
        for k in range(len(pool)):
            view = pool[(start + k) % len(pool)]
            if view.fits(units):
                return view.node_id, None
        return pool[start].node_id, None
    candidates = [v for v in pool if v.fits(units)]
    if not candidates:
        # Nothing fits now: wait here if this node may take it, else queue on
        # the least busy node that may.
        if local in pool:
            return local.node_id, None
        best = min(pool, key=lambda v: v.load.get("queued", 0))
        return best.node_id, None
    if arg_bytes:
        holder = max(arg_bytes, key=arg_bytes.get)
        for view in candidates:
            if view.node_id == holder:
                return holder, None
    for view in candidates:                 # this node first
        if view.used_fraction_after(units) <= HALF_USED:
            return view.node_id, None
    best = min(candidates, key=lambda v: (v.used_fraction_after(units), v is not local))
    return best.node_id, None


def _describe(units: dict) -> str:
    return "{" + ", ".join(f"{k}: {v / UNIT:g}" for k, v in sorted(units.items())) + "}"
