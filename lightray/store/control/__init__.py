"""The cluster's control store: nodes, actors, functions, jobs and a key-value table.

    store = ControlStore("/path/to/control.db")           # or ":memory:"
    store.apply((NODE_REGISTER, node_id, address, resources_json, labels_json, ts))
    store.apply_batch([(NODE_HEARTBEAT, node_id, load_json, ts), ...])
    store.nodes(alive_only=True); store.named_actor(namespace, name); store.kv_get(ns, key)

Writes are command tuples (lightray.store.control.commands lists them and their
results); reads are methods. lightray.store.control.store explains why the store
is a deterministic state machine and what that promises.

Modules:

    store.py      ControlStore: opens the SQLite file, applies commands, reads
    commands.py   the command kinds, their fields, validate() and the results
    writes.py     how each command changes the database (one function per kind)
    records.py    what reads return: NodeRecord, ActorRecord, JobRecord
    schema.py     the schema, its version and the checks made on opening
    snapshot.py   a whole database image as bytes, for a new replica
    raft/         a pure Raft core (elections, log replication, membership changes,
                  snapshots, read index) that replicates these commands
    command_codec.py  commands as log-entry bytes (a tagged format, no pickle)
    kv_requests.py  lightray.kv's requests: their shapes, the kv_write a write becomes
    kv_reader.py  KVReader: lightray.kv's local reads from a replica's file, read-only
    replica_storage.py  SqliteRaftStorage: a replica's Raft log in raft.db, fsync'd
    replica.py    ControlReplica: RaftNode + raft.db + the ControlStore it builds,
                  driven by the agent's I/O side (lightray.agent.server)

May import: lightray.states (actor state names) and the standard library
(sqlite3, json). Never the agent, the client or the API: the agent drives it.
"""
from .commands import (
    ACTOR_ALIVE,
    ACTOR_DEAD,
    ACTOR_PENDING,
    ACTOR_REGISTER,
    ACTOR_REMOVE,
    ACTOR_RESTARTING,
    ACTOR_STATES,
    ACTOR_UPDATE,
    ALREADY_APPLIED,
    DEAD,
    EXISTS,
    FINISHED,
    FUNCTION_EXPORT,
    JOB_FINISH,
    JOB_START,
    KV_DELETE,
    KV_PUT,
    KV_WRITE,
    NODE_DEAD,
    NODE_HEARTBEAT,
    NODE_REGISTER,
    OK,
    STALE,
    TAKEN,
    UNKNOWN,
    UPDATED,
    validate,
)
from .records import ActorRecord, JobRecord, NodeRecord
from .schema import SCHEMA_VERSION, NotAControlStore
from .store import ControlStore

# Command kinds, results and actor states are the commands module's constants.
__all__ = [
    "ACTOR_ALIVE",
    "ACTOR_DEAD",
    "ACTOR_PENDING",
    "ACTOR_REGISTER",
    "ACTOR_REMOVE",
    "ACTOR_RESTARTING",
    "ACTOR_STATES",
    "ACTOR_UPDATE",
    "ALREADY_APPLIED",
    "DEAD",
    "EXISTS",
    "FINISHED",
    "FUNCTION_EXPORT",
    "JOB_FINISH",
    "JOB_START",
    "KV_DELETE",
    "KV_PUT",
    "KV_WRITE",
    "NODE_DEAD",
    "NODE_HEARTBEAT",
    "NODE_REGISTER",
    "OK",
    "SCHEMA_VERSION",
    "STALE",
    "TAKEN",
    "UNKNOWN",
    "UPDATED",
    "ActorRecord",
    "ControlStore",
    "JobRecord",
    "NodeRecord",
    "NotAControlStore",
    "validate",
]
