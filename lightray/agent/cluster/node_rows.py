"""The rows of lightray.nodes() and `lightray status`, from an agent's membership. No I/O.

    ClusterMembership (peers' views, node table, known leader) ──nodes_info──▶
        one dict per node, this one first: address, alive, suspect (seconds
        silent, once past node_table.SUSPECT_AFTER), incarnation, control
        role, resources, store figures, memory (used/total bytes, as of the
        last heartbeat; None outside a cluster)
    the rows ──resources──▶ the live nodes' resources summed
"""
from __future__ import annotations

from .control_plane import LEADER, REPLICA
from .node_table import ALIVE


def resources(rows: list) -> dict:
    """The resources of the live nodes, summed: total and available."""
    total: dict = {}
    available: dict = {}
    for node in rows:
        if node["alive"]:
            for name, amount in node["resources"].items():
                total[name] = total.get(name, 0) + amount
            for name, amount in node["available"].items():
                available[name] = available.get(name, 0) + amount
    return {"total": total, "available": available}


def _suspect(membership, view, now):
    """Seconds a live peer has been silent once that makes it suspect, else None."""
    nodes = membership.nodes
    if now is None or not view.alive or nodes.verdict(view.node_id, now) == ALIVE:
        return None
    return round(nodes.silence(view.node_id, now), 1)


def _control(membership, node_id: str, said):
    """The control role: the leader as this agent knows it (its replica follows
    the terms; a heartbeat may lag), else what the node's heartbeat said."""
    leader = membership.leader_id
    if leader is not None:
        if node_id == leader:
            return LEADER
        if said == LEADER:
            return REPLICA     # it led before the last election
    return said


def nodes_info(membership) -> list:
    """Every node known, this one first; suspicion as of the last tick."""
    now = membership.nodes.last_tick
    local = {"node_id": membership.node_id, "address": membership.mesh_address or "(embedded)",
             "alive": True, "is_head": membership.is_head or not membership.mesh_address,
             "resources": membership.pool.as_floats("total"),
             "available": membership.pool.as_floats("available"),
             "store_used": membership.store.used, "store_capacity": membership.store.capacity,
             "spilled": membership.store.spilled_now, "hot": membership.hot,
             "pulled": membership.store.pulled_total, "served": membership.store.served_total,
             "warm": membership.store.warm_bytes,
             "memory_fraction": membership.load.get("memory_fraction", 0.0),
             "memory_used": membership.load.get("memory_used"),
             "memory_total": membership.load.get("memory_total"),
             "queued": membership.queued_count(),
             "control": _control(membership, membership.node_id, membership.load.get("control")),
             "suspect": None, "incarnation": membership.incarnation}
    rows = [local]
    for view in membership.peers.values():
        load = view.load
        rows.append({"node_id": view.node_id, "address": view.address, "alive": view.alive,
                     "is_head": load.get("is_head", False),
                     "resources": {k: v / 10_000 for k, v in view.total.items()},
                     "available": ({k: max(v, 0) / 10_000 for k, v in view.available.items()}
                                   if view.alive else {}),
                     "store_used": load.get("store_used", 0),
                     "store_capacity": load.get("store_capacity", 0),
                     "spilled": load.get("spilled", 0), "hot": view.hot,
                     "pulled": load.get("pulled", 0), "served": load.get("served", 0),
                     "warm": load.get("warm", 0),
                     "memory_fraction": load.get("memory_fraction", 0.0),
                     "memory_used": load.get("memory_used"),
                     "memory_total": load.get("memory_total"),
                     "queued": load.get("queued", 0),
                     "control": (_control(membership, view.node_id, load.get("control"))
                                 if view.alive else None),
                     "died": load.get("died"), "suspect": _suspect(membership, view, now),
                     "incarnation": membership.nodes.incarnation(view.node_id)})
    return rows
