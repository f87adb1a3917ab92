"""The tasks recorded, as a Chrome / Perfetto trace (lightray.timeline, `lightray timeline`).

    every node's runs (lightray.observe.gather, kind "runs": a worker's RUNNING
    and the end that followed) ──trace_events──▶ {"traceEvents": [...]}:
        one process per node ("M" process_name: node id, head first),
        one thread per worker ("M" thread_name: its pid, its actor's class),
        one "X" slice per run (name, args: task id, state, error, actor),
        a flow arrow ("s" → "f") from the run that made an argument to each
        run that took it, where both are recorded

Times are microseconds since the epoch (the trace format's "ts"); a run
still going when asked ends at that moment, its args say RUNNING. The file
opens in https://ui.perfetto.dev and chrome://tracing.
"""
from __future__ import annotations

import json
import time

from .events import RUN_FIELDS
from .gather import gathered, node_rows

_FIELD = {name: index for index, name in enumerate(RUN_FIELDS)}


def trace_events(runs: list, nodes: list, now: float | None = None) -> list:
    """The trace events of runs (lists, RUN_FIELDS) on nodes (lightray.state rows)."""
    now = time.time() if now is None else now
    order = [n["node_id"] for n in sorted(nodes, key=lambda n: (not n["is_head"], n["node_id"]))]
    for run in runs:
        if run[_FIELD["node_id"]] not in order:
            order.append(run[_FIELD["node_id"]])
    process_of = {node_id: index + 1 for index, node_id in enumerate(order)}
    heads = {n["node_id"] for n in nodes if n["is_head"]}
    events = []
    for node_id, pid in process_of.items():
        label = f"node {node_id}" + (" (head)" if node_id in heads else "")
        events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                       "args": {"name": label}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                       "args": {"sort_index": pid}})
    threads: dict = {}
    slices = []
    for run in sorted(runs, key=lambda r: r[_FIELD["start"]]):
        task_id, name, kind, actor_id, node_id, worker_pid, start, end, state, error, deps = run
        pid, tid = process_of[node_id], worker_pid or 0
        if (pid, tid) not in threads:
            label = f"worker pid {tid}"
            if kind in ("ACTOR_TASK", "ACTOR_CREATION_TASK") and name:
                label += f" (actor {name.split('.')[0]})"
            threads[(pid, tid)] = label
        finished = end if end is not None else now
        args = {"task_id": task_id, "state": state, "type": kind, "node_id": node_id,
                "worker_pid": worker_pid}
        if actor_id is not None:
            args["actor_id"] = actor_id
        if error is not None:
            args["error"] = error
        slices.append({"ph": "X", "name": name or task_id, "cat": kind or "task", "pid": pid,
                       "tid": tid, "ts": start * 1e6,
                       "dur": max(finished - start, 0.0) * 1e6, "args": args})
    for (pid, tid), label in threads.items():
        events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                       "args": {"name": label}})
    events.extend(slices)
    events.extend(_flows(runs, process_of))
    return events


def _flows(runs: list, process_of: dict) -> list:
    """An arrow from the last run of each argument's task to each run taking it."""
    producer: dict = {}
    for run in runs:
        if run[_FIELD["end"]] is not None and run[_FIELD["state"]] == "FINISHED":
            producer[run[_FIELD["task_id"]]] = run
    flows = []
    flow_id = 0
    for run in runs:
        for dep in run[_FIELD["deps"]] or ():
            made = producer.get(dep)
            if made is None or made is run:
                continue
            flow_id += 1
            start, end = made[_FIELD["start"]], made[_FIELD["end"]]
            # Inside the producer's slice (its last microsecond), so the
            # viewers bind the arrow to it; its head at the consumer's start.
            at = max(start, end - 1e-6) * 1e6
            flows.append({"ph": "s", "id": flow_id, "name": "argument", "cat": "dependency",
                          "pid": process_of[made[_FIELD["node_id"]]],
                          "tid": made[_FIELD["worker_pid"]] or 0, "ts": at})
            flows.append({"ph": "f", "bp": "e", "id": flow_id, "name": "argument",
                          "cat": "dependency", "pid": process_of[run[_FIELD["node_id"]]],
                          "tid": run[_FIELD["worker_pid"]] or 0,
                          "ts": run[_FIELD["start"]] * 1e6})
    return flows


def timeline(path: str | None = None, address: str | None = None,
             cluster_key: str | None = None) -> list:
    """The trace events of every task and actor call recorded in the cluster;
    written as Chrome trace JSON ({"traceEvents": [...]}) to path if given."""
    events = trace_events(gathered("runs", address, cluster_key),
                          node_rows(address, cluster_key))
    if path is not None:
        with open(path, "w") as file:
            json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, file)
    return events


def write_timeline(path: str, address=None, cluster_key=None) -> int:
    """timeline(path): how many slices it wrote."""
    return sum(1 for e in timeline(path, address, cluster_key) if e["ph"] == "X")
