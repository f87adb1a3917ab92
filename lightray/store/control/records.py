"""What the control store's reads return: immutable, picklable records.

JSON columns come back decoded (dicts), so a caller never parses; every
other field is exactly what a command wrote.
"""
from __future__ import annotations

import json
from typing import NamedTuple


class NodeRecord(NamedTuple):
    node_id: str
    address: str
    resources: dict                  # {resource name: total quantity}
    labels: dict                     # {label: value}
    load: dict | None             # the last heartbeat's report; None before one
    alive: bool                      # False once node_dead was applied, for good
    registered_at: float
    last_heartbeat_at: float         # registration counts as a heartbeat
    died_at: float | None

    @classmethod
    def from_row(cls, row: tuple) -> NodeRecord:
        (node_id, address, resources_json, labels_json, load_json, alive,
         registered_at, last_heartbeat_at, died_at) = row
        return cls(node_id, address, json.loads(resources_json), json.loads(labels_json),
                   None if load_json is None else json.loads(load_json), bool(alive),
                   registered_at, last_heartbeat_at, died_at)


class ActorRecord(NamedTuple):
    actor_id: bytes
    name: str | None
    namespace: str | None
    node_id: str | None           # None while not placed
    state: str                       # pending, alive, restarting, dead
    owner: bytes | None
    detached: bool
    class_name: str
    worker_id: str | None
    incarnation: int                 # restarts so far
    death_cause: str | None
    registered_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: tuple) -> ActorRecord:
        row = list(row)
        row[6] = bool(row[6])
        return cls(*row)


class JobRecord(NamedTuple):
    job_id: bytes
    driver_address: str
    driver_pid: int
    namespace: str
    started_at: float
    finished_at: float | None     # None while the job runs

    @property
    def running(self) -> bool:
        return self.finished_at is None


NODE_COLUMNS = ("node_id, address, resources_json, labels_json, load_json, alive, "
                "registered_at, last_heartbeat_at, died_at")
ACTOR_COLUMNS = ("actor_id, name, namespace, node_id, state, owner, detached, class_name, "
                 "worker_id, incarnation, death_cause, registered_at, updated_at")
JOB_COLUMNS = "job_id, driver_address, driver_pid, namespace, started_at, finished_at"
