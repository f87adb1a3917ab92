"""What the dashboard shows, read from the state API: the one adapter between them.

    lightray.state.list_nodes / summarize_tasks / list_actors / list_objects /
    list_tasks(state=FAILED)  ──snapshot()──▶  one JSON-ready dict:
        nodes      one row per node: state, CPU and memory use, store use, spilled bytes
        tasks      counts by state (summed over task names) and by name
        actors     one row per actor
        objects    the largest objects, largest first
        errors     the most recent failed tasks, with their error text (tracebacks)
        spilled_bytes, store_used, store_capacity   summed over the live nodes

Every figure comes from lightray.state, which gathers it from all the nodes:
the dashboard keeps no counts of its own (its only memory is the history of
task counts, lightray.dashboard.history).
"""
from __future__ import annotations

import time

from .. import state as state_api

LARGEST_OBJECTS = 12       # objects shown, largest first
RECENT_ERRORS = 20         # failed tasks shown, the latest first
OBJECTS_SCANNED = 1000     # objects listed to find the largest
ERRORS_SCANNED = 200       # failed tasks listed to find the latest
ACTORS_SHOWN = 1000        # actors listed (the newest)
TASK_STATES = ("PENDING", "QUEUED", "RUNNING", "FINISHED", "FAILED", "CANCELLED")


def snapshot(previous: dict | None = None) -> dict:
    """The cluster now, as the page draws it (see the module docstring).

    previous: the last snapshot; its errors are kept when the count of failed
    tasks has not changed, sparing a scan of every node's task events."""
    nodes = [_node(row) for row in state_api.list_nodes()]
    by_name = state_api.summarize_tasks()
    actors = [_actor(row) for row in state_api.list_actors(limit=ACTORS_SHOWN)]
    objects = [_object(row) for row in state_api.list_objects(limit=OBJECTS_SCANNED)]
    failed_now = sum(counts.get("FAILED", 0) for counts in by_name.values())
    if previous is not None and previous["tasks"]["by_state"].get("FAILED") == failed_now:
        errors = previous["errors"]
    else:
        failed = state_api.list_tasks(filters=[("state", "=", "FAILED")], limit=ERRORS_SCANNED)
        errors = [_error(row) for row in sorted(
            failed, key=lambda t: t.get("finished_at") or 0, reverse=True)[:RECENT_ERRORS]]
    objects.sort(key=lambda o: o["size"], reverse=True)
    by_state = dict.fromkeys(TASK_STATES, 0)
    for counts in by_name.values():
        for state, count in counts.items():
            by_state[state] = by_state.get(state, 0) + count
    live = [n for n in nodes if n["state"] != "DEAD"]
    return {
        "taken_at": time.time(),
        "nodes": nodes,
        "tasks": {"by_state": by_state, "by_name": by_name, "total": sum(by_state.values())},
        "actors": actors,
        "objects": objects[:LARGEST_OBJECTS],
        "num_objects": len(objects),
        "errors": errors,
        "spilled_bytes": sum(n["spilled_bytes"] or 0 for n in live),
        "store_used": sum(n["store_used"] or 0 for n in live),
        "store_capacity": sum(n["store_capacity"] or 0 for n in live),
    }


def _use(total: dict, available: dict, name: str):
    """(used, total) of one resource; used None where it is not known."""
    amount = (total or {}).get(name, 0)
    if not amount:
        return None, 0
    if available is None or name not in available:
        return None, amount
    return max(amount - available[name], 0), amount


def _node(row: dict) -> dict:
    total, available = row.get("resources_total") or {}, row.get("resources_available")
    cpu_used, cpu_total = _use(total, available if row.get("state") != "DEAD" else None, "CPU")
    memory_total = row.get("memory_total") or 0
    return {
        "node_id": row["node_id"], "address": row.get("address"), "state": row.get("state"),
        "is_head": bool(row.get("is_head")), "control_role": row.get("control_role"),
        "cpu_used": cpu_used, "cpu_total": cpu_total,
        "memory_fraction": (row.get("memory_used") or 0) / memory_total if memory_total else None,
        "store_used": row.get("store_used") or 0, "store_capacity": row.get("store_capacity") or 0,
        "spilled_bytes": row.get("spilled_bytes") or 0,
    }


def _actor(row: dict) -> dict:
    return {key: row.get(key) for key in ("actor_id", "class_name", "name", "namespace", "state",
                                          "node_id", "pid", "restarts", "death_cause")}


def _object(row: dict) -> dict:
    return {"object_id": row["object_id"], "size": row.get("size") or 0,
            "node_id": row.get("node_id"), "location": row.get("location"),
            "owner": row.get("owner"), "ref_count": row.get("ref_count")}


def _error(row: dict) -> dict:
    return {key: row.get(key) for key in ("task_id", "name", "node_id", "worker_pid",
                                          "finished_at", "retries", "error")}
