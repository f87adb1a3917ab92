"""What the store reports: its counters (``info``) and one row per object
(``memory_summary``, behind lightray.memory_summary() and ``lightray memory``).

    INFO "store" / "memory" ──▶ AgentState.info ──▶ info(store) / memory_summary(store)

Read-only views of a StoreCapacity (lightray.agent.store); no I/O.
"""
from __future__ import annotations

import collections

from ..ids import is_handle_object
from ..serialization import ERROR, SHARED
from ..states import PULLING, REMOTE, RESTORING, SPILLED, SPILLING


def info(store) -> dict:
    return {"used_bytes": store.used, "capacity_bytes": store.capacity,
            "reserved_bytes": store.reserved, "spilled_bytes": store.spilled_now,
            "spilled_bytes_total": store.spilled_total,
            "restored_bytes": store.restored_total, "spill_dir": store.spill_dir,
            # freed segments kept for the next pull or restore (lightray.store.pool)
            "warm_bytes": store.warm_bytes,
            # time the spill thread spent copying (set by the agent's I/O side)
            "spill_seconds": store.copy_seconds.get("spill", 0.0),
            "restore_seconds": store.copy_seconds.get("restore", 0.0),
            # bytes brought from other nodes, and sent to them (a cluster)
            "pulled_bytes": store.pulled_total, "served_bytes": store.served_total,
            "num_objects": sum(1 for object_id in store.objects
                               if not is_handle_object(object_id))}


def memory_summary(store) -> dict:
    """info() plus one row per object (id, size, state, call site, holders)."""
    holders: dict = collections.defaultdict(list)
    for client in store.clients.values():
        for object_id in client.held:
            holders[object_id].append(f"{client.kind} pid {client.pid}")
    rows = []
    for object_id, entry in store.objects.items():
        if is_handle_object(object_id):
            continue
        payload = entry.payload
        if entry.pending:
            state, size = "pending", 0
        elif payload[0] == SHARED:
            state = {None: "in memory", SPILLING: "in memory (spilling)",
                     SPILLED: "spilled", RESTORING: "restoring", PULLING: "pulling",
                     REMOTE: f"on node {entry.location}"}[entry.spill]
            if entry.spill is None and entry.location is not None:
                state = "in memory (copy)"
            size = payload[1][1]
        else:
            state = "in memory (inline)" if payload[0] != ERROR else "error"
            size = len(payload[1]) if payload[1] is not None else 0
        held_by = holders.get(object_id, [])
        pins = entry.refs - len(held_by)
        rows.append({"object_id": object_id.hex(), "size": size, "state": state,
                     "call_site": entry.call_site or "", "holders": held_by,
                     "pins": max(pins, 0)})
    summary = info(store)
    summary["objects"] = rows
    return summary
