"""The rows of lightray.state, gathered from every node through one agent.

    lightray.state.list_tasks(...) / `lightray list tasks`
        ──(INFO, id, ("state", "tasks", "cluster"))──▶ this driver's agent (after
        init()), else the agent at address= (or the one `lightray status` picks)
        ◀── {node id: rows} (lightray.observe.queries), nodes that did not answer
    rows of one task from several nodes merged (lightray.observe.events) ──▶
    filters, then limit ──▶ list of dicts

Nodes come from the agent's membership, as `lightray status` shows them.
A node that did not answer is left out with a StateWarning naming it.
"""
from __future__ import annotations

import warnings

from .. import exceptions
from ..agent.session import pid_alive
from ..client.core import CoreClient
from ..discovery import NoClusterError, agent_at, auto_agent, check_cluster_key
from ..runtime import current_client_or_none
from .events import ACTOR_FIELDS, TASK_FIELDS, merge_task_rows
from .queries import OBJECT_FIELDS

TIMEOUT = 30.0             # seconds to wait for the agent's answer
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000_000

TASK_KEYS = ("task_id", "name", "type", "state", "node_id", "worker_pid", "actor_id",
             "submitted_at", "started_at", "finished_at", "retries", "error")
ACTOR_KEYS = ("actor_id", "class_name", "name", "namespace", "state", "node_id", "pid",
              "restarts", "death_cause")
OBJECT_KEYS = OBJECT_FIELDS
NODE_KEYS = ("node_id", "address", "state", "is_head", "control_role", "resources_total",
             "resources_available", "memory_used", "memory_total", "store_used",
             "store_capacity", "spilled_bytes")
KEYS = {"tasks": TASK_KEYS, "actors": ACTOR_KEYS, "objects": OBJECT_KEYS, "nodes": NODE_KEYS}
OPERATORS = ("=", "!=")
# Keys whose values are names in capitals: compared whatever their case.
_ANY_CASE = {"state", "type", "location", "control_role"}


class StateWarning(UserWarning):
    """Some nodes did not answer: the rows are those of the others."""


class StateQueryError(exceptions.LightrayError):
    """The state API cannot answer here (no runtime, local mode, an agent that refused)."""


# ------------------------------------------------------------ asking

def ask(what, address: str | None = None, cluster_key: str | None = None):
    """An agent's answer to INFO what: this driver's agent unless address is
    given (or no runtime runs in this process: then the cluster
    ``lightray status`` would pick)."""
    client = None if address is not None else current_client_or_none()
    if client is not None:
        if getattr(client, "runs_in_process", False):
            raise StateQueryError(
                "the state API needs an agent: a local-mode runtime (init(local_mode=True)) "
                "records no task events; start one without local_mode")
        return client.info(what, timeout=TIMEOUT)
    try:
        record = agent_at(address) if address else auto_agent()
    except NoClusterError as error:
        raise StateQueryError(str(error)) from None
    except (ConnectionError, ValueError) as error:
        raise StateQueryError(str(error)) from None
    check_cluster_key(record, cluster_key)
    pid = record.get("pid")
    try:
        client = CoreClient(record["ipc"], kind="driver",
                            agent_alive=(lambda: pid_alive(pid)) if pid else None)
    except Exception as error:
        raise StateQueryError(f"cannot reach the agent at {record['ipc']}: {error}") from None
    try:
        return client.info(what, timeout=TIMEOUT)
    except exceptions.GetTimeoutError as error:
        raise StateQueryError(f"no answer from the agent at {record['ipc']}: {error}") from None
    finally:
        client.close()


def gathered(kind: str, address=None, cluster_key=None) -> list:
    """Every node's rows of kind (lists in the order of queries.FIELDS[kind])."""
    answer = ask(("state", kind, "cluster"), address, cluster_key)
    if not isinstance(answer, dict) or "nodes" not in answer:
        problem = answer.get("error") if isinstance(answer, dict) else None
        raise StateQueryError(problem or f"the agent gave no state answer ({answer!r:.100})")
    missing = answer.get("missing") or {}
    if missing:
        warnings.warn(StateWarning(
            "left out, they did not answer: " + "; ".join(
                f"node {node}: {why}" for node, why in sorted(missing.items()))), stacklevel=3)
    return [row for rows in answer["nodes"].values() for row in rows]


# ------------------------------------------------------------ rows

def task_rows(address=None, cluster_key=None) -> list:
    merged = merge_task_rows(gathered("tasks", address, cluster_key))
    index = {name: TASK_FIELDS.index(name) for name in TASK_KEYS}
    rows = [{key: row[i] for key, i in index.items()} for row in merged]
    rows.sort(key=lambda r: (r["submitted_at"] or r["started_at"] or r["finished_at"] or 0.0,
                             r["task_id"]))
    return rows


def actor_rows(address=None, cluster_key=None) -> list:
    latest: dict = {}
    at = ACTOR_FIELDS.index("state_at")
    for row in sorted(gathered("actors", address, cluster_key), key=lambda r: r[at]):
        have = latest.get(row[0])
        if have is not None:   # what the newest change's node did not know (a pid, a name)
            row = [new if new is not None else old for new, old in zip(row, have)]
        latest[row[0]] = row
    rows = [dict(zip(ACTOR_FIELDS, row)) for row in sorted(latest.values(),
                                                           key=lambda r: r[at])]
    return [{key: row[key] for key in ACTOR_KEYS} for row in rows]


def object_rows(address=None, cluster_key=None) -> list:
    rows = [dict(zip(OBJECT_FIELDS, row)) for row in gathered("objects", address, cluster_key)]
    rows.sort(key=lambda r: (-r["size"], r["object_id"]))
    return rows


def node_rows(address=None, cluster_key=None) -> list:
    """The nodes as `lightray status --json` has them, in lightray.state's keys."""
    rows = []
    for node in ask("nodes", address, cluster_key):
        if not node.get("alive"):
            state = "DEAD"
        elif node.get("suspect") is not None:
            state = "SUSPECT"
        else:
            state = "ALIVE"
        rows.append({"node_id": node["node_id"], "address": node.get("address"),
                     "state": state, "is_head": bool(node.get("is_head")),
                     "control_role": node.get("control"),
                     "resources_total": node.get("resources") or {},
                     "resources_available": node.get("available") or {},
                     "memory_used": node.get("memory_used"),
                     "memory_total": node.get("memory_total"),
                     "store_used": node.get("store_used", 0),
                     "store_capacity": node.get("store_capacity", 0),
                     "spilled_bytes": node.get("spilled", 0)})
    return rows


ROWS = {"tasks": task_rows, "actors": actor_rows, "objects": object_rows, "nodes": node_rows}


# ------------------------------------------------------ filters, limit

def check_filters(kind: str, filters) -> list:
    """filters as a list of (key, op, value); ValueError naming what is wrong."""
    if filters is None:
        return []
    if isinstance(filters, (str, bytes)) or not isinstance(filters, (list, tuple)):
        raise ValueError(f"filters must be a list of (key, op, value) tuples, not "
                         f"{type(filters).__name__}")
    checked = []
    keys = KEYS[kind]
    for item in filters:
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise ValueError(f"a filter must be a (key, op, value) tuple, not {item!r}")
        key, op, value = item
        if key not in keys:
            raise ValueError(f"unknown filter key {key!r} for {kind} (keys: {', '.join(keys)})")
        if op not in OPERATORS:
            raise ValueError(f"unknown filter operator {op!r} (use '=' or '!=')")
        checked.append((key, op, value))
    return checked


def check_limit(limit) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValueError(f"limit must be an int, not {type(limit).__name__}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT:,}, not {limit}")
    return limit


def _text(key: str, value) -> str:
    text = "" if value is None else str(value)
    return text.lower() if key in _ANY_CASE else text


def select(rows: list, filters: list, limit: int, newest: bool = True) -> list:
    """The rows every filter keeps; the last limit of them (newest), else the first."""
    for key, op, value in filters:
        wanted = _text(key, value)
        if op == "=":
            rows = [row for row in rows if _text(key, row[key]) == wanted]
        else:
            rows = [row for row in rows if _text(key, row[key]) != wanted]
    return rows[-limit:] if newest else rows[:limit]


def listing(kind: str, filters=None, limit: int = DEFAULT_LIMIT, address=None,
            cluster_key=None) -> list:
    """lightray.state.list_<kind>: checked first, then asked."""
    filters = check_filters(kind, filters)
    limit = check_limit(limit)
    return select(ROWS[kind](address, cluster_key), filters, limit,
                  newest=kind in ("tasks", "actors"))


def task_summary(address=None, cluster_key=None) -> dict:
    """{task name: {state: count}} over every task recorded."""
    summary: dict = {}
    for row in task_rows(address, cluster_key):
        counts = summary.setdefault(row["name"] or "?", {})
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return summary
