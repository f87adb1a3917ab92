"""Message kinds and their encoding.

A message is one ZeroMQ frame: a 4-byte header, then a pickled list of
operations, each a tuple whose first item is one of the op codes below. Every sender batches what it
has to say into one message per wake-up, so under load one frame carries many
submissions, results or reference-count changes.

    client ──(send socket)──▶ agent     INC DEC SUBMIT EXPORT PUT SUBSCRIBE CANCEL
                                        DONE BLOCKED UNBLOCKED RETURNED INFO SHUTDOWN
    agent  ──▶ client (receive socket)  WELCOME READY EXEC CANCEL_TASK STEAL INFO_REPLY

With a lease (see lightray.client.direct) a driver sends EXEC straight to a worker,
which answers DIRECT_DONE; the agent then only lends and takes back workers.
Actor method calls go the same way, straight from any caller to the actor's
worker (ACTOR_CALL / DIRECT_DONE); the agent only places, restarts and
names actors (see lightray.agent.actors).

Values larger than the inline threshold never travel here on one host: they
are in shared memory, and only their segment layout moves.

The header, checked before anything is unpickled:

    byte 0-1  MAGIC b"LR"          not a lightray frame otherwise
    byte 2    protocol version     PROTOCOL_VERSION; ops of another version are refused
    byte 3    kind                 OPS: a pickled list of ops follows
                                   REFUSAL: UTF-8 text follows, why the sender refuses
                                   us (JOIN_REFUSED); readable whatever the version, so
                                   an agent of another version learns why it was refused

``decode`` raises ``BadMessage`` (and only that) for a frame it will not
hand on; callers catch it and report the sender (lightray.transport.guard).
"""
from __future__ import annotations

import pickle

# client -> agent
HELLO = 1          # (HELLO, client_id, kind, pid, worker_id)          on the receive socket
INC = 2            # (INC, [object_id, ...])    this process now holds refs
DEC = 3            # (DEC, [object_id, ...])    this process dropped its last ref
SUBMIT = 4         # (SUBMIT, TaskSpec tuple[, call site])
EXPORT = 5         # (EXPORT, function_id, function_bytes)
PUT = 6            # (PUT, object_id, payload, contained_ids[, call site])
SUBSCRIBE = 7      # (SUBSCRIBE, [object_id, ...])  tell me when these are ready
CANCEL = 8         # (CANCEL, object_id, force[, recursive])
DONE = 9           # (DONE, task_id, [payload...], [contained...], retryable)
BLOCKED = 10       # (BLOCKED, task_id, [returned TaskSpec...])  worker waits in get
UNBLOCKED = 11     # (UNBLOCKED, task_id)
RETURNED = 12      # (RETURNED, [TaskSpec...])  tasks a blocked worker hands back
INFO = 13          # (INFO, request_id, what)
SHUTDOWN = 14      # (SHUTDOWN,)
GOODBYE = 15       # (GOODBYE,)  a client detaches
LEASE_REQUEST = 16  # (LEASE_REQUEST, resource request)  lend me a worker of this shape
LEASE_RETURN = 17   # (LEASE_RETURN, worker_id)
REGISTER = 18       # (REGISTER, object_id, payload or None, contained)  a direct result
                    #   escapes the driver: None promises it, a payload fulfils it
DIRECT_RESULT = 19  # (DIRECT_RESULT, owner, object_id, payload, contained)  from a worker:
                    #   a direct task's result the agent must hold (shared memory, refs)
DIRECT_CANCEL = 20  # (DIRECT_CANCEL, worker_id, task_id, force[, recursive])
ACTOR_CREATE = 21   # (ACTOR_CREATE, request_id or 0, constructor TaskSpec, actor options dict)
                    #   request_id: answer with INFO_REPLY (named actors: the name may be taken)
ACTOR_SUBSCRIBE = 22  # (ACTOR_SUBSCRIBE, actor_id)  tell me where it runs, and every change
ACTOR_KILL = 23     # (ACTOR_KILL, actor_id, no_restart[, why])  why: from the actor itself
                    #   (lightray.actor.exit_actor), said to its callers; final
ACTOR_READY = 24    # (ACTOR_READY, actor_id, error payload or None)  from the actor's worker
RESERVE = 25        # (RESERVE, request_id, size, object_id)  room for the segment of object_id
                    #   I am about to write (size < 0: not written, room given back);
                    #   INFO_REPLY ("ok",) once granted (may wait for spilling) or ("full", why)
RESTORE = 26        # (RESTORE, request_id, object_id)  its segment is gone (spilled): bring
                    #   it back; INFO_REPLY ("ok", payload) or ("lost", pickled error)
ADOPT_FROM = 27     # (ADOPT_FROM, request_id, node_id, [object_id])  from an actor's worker:
                    #   it now holds these refs, from a call from node_id's side: count it
                    #   and push READY to it (INC and SUBSCRIBE in one); ask node_id where
                    #   unknown ones are (agent_remote_actors). INFO_REPLY once it answered.
                    #   (ADOPT_FROM, 0, node_id, [object_id], True)  from a caller: refs inside
                    #   results an actor on node_id sent it, which node_id keeps for us
                    #   (HAND_OVER): ask it about each, known or not; the REGISTERs of the
                    #   results that follow hold them (no INC, no reply)
HAND_OVER = 28      # (HAND_OVER, node_id, [object_id])  from an actor's worker: refs inside
                    #   results it sends straight to a caller on node_id: keep each for
                    #   node_id until it asks (DESCRIBE), says FREE, or dies
KV = 29             # (KV, request_id, request)  a lightray.kv request
                    #   (lightray.store.control.kv_requests); INFO_REPLY with its answer
TASK_EVENTS = 30    # (TASK_EVENTS, [event tuple])  from a worker: its tasks' starts and ends
                    #   (lightray.observe.events)

# agent -> client
WELCOME = 101      # (WELCOME, node_info dict)
READY = 102        # (READY, [(object_id, payload), ...])
EXEC = 103         # (EXEC, TaskSpec, function_bytes or None, [dep payloads], assignment)
CANCEL_TASK = 104  # (CANCEL_TASK, task_id)
INFO_REPLY = 105   # (INFO_REPLY, request_id, value)
STEAL = 106        # (STEAL,)  hand back your unstarted tasks: another worker is idle
LEASE_GRANTED = 107  # (LEASE_GRANTED, shape, worker_id or None, assignment)
LEASE_REVOKE = 108   # (LEASE_REVOKE, worker_id)  return it after the running task
WORKER_DIED = 109    # (WORKER_DIED, worker_id, status, cancelled)  to its lessee
ACTOR_STATE = 110    # (ACTOR_STATE, actor_id, incarnation, state, worker_id, death payload)
SPILLED = 112        # (SPILLED, [object_id, ...])  to holders: spilled, drop your mappings
ACTOR_START = 111    # (ACTOR_START, constructor TaskSpec, class bytes, [dep payloads],
                     #   assignment, actor options dict)  to the actor's own worker

# driver <-> leased worker, on the worker's own ROUTER (direct submission)
DIRECT_HELLO = 201   # (DIRECT_HELLO, client id[, node id])  from the caller's socket; the
                     #   node id: a caller on another node (an actor's TCP listener)
DIRECT_DONE = 202    # (DIRECT_DONE, task_id, [payload...], registered, retryable[, node id,
                     #   [[ids inside each result]]])  the node id: an actor on another node
                     #   whose results hold refs, handed over to the caller's node (HAND_OVER)
ACTOR_CALL = 203     # (ACTOR_CALL, TaskSpec, [dep payloads][, caller's node id[, [ids]]])
                     #   caller -> actor, answered by DIRECT_DONE; calls from one caller
                     #   arrive in submission order. The node id: an actor on another node,
                     #   refs inside the arguments (ADOPT_FROM); the ids: refs inside the
                     #   values of ObjectRef arguments (not in the spec's contained)

# agent <-> agent, over the mesh (lightray.transport.mesh, lightray.agent.cluster.membership)
JOIN = 301           # (JOIN, node dict)  a new agent to any member (its incarnation in
                     #   the dict: 0, or one more than the one declared dead)
MEMBERS = 302        # (MEMBERS, [node dict, ...])  the membership authority (the control
                     #   leader; the head while none is known) to a new agent: everyone
NODE_JOINED = 303    # (NODE_JOINED, node dict)  the authority to the others
HEARTBEAT = 304      # (HEARTBEAT, load dict)  every agent to every peer, twice a second
NODE_DEAD = 305      # (NODE_DEAD, node_id, why, incarnation)  the membership authority to
                     # the others (and to the dead node itself, should it speak again)
LEAVING = 306        # (LEAVING,)  an agent stopping cleanly
FORWARD = 307        # (FORWARD, TaskSpec, function bytes or None, [argument descriptor])
RESULT = 308         # (RESULT, task_id, [result descriptor], [[(id, descriptor)] of refs
                     #   inside each result])  back to the forwarding agent
FREE = 309           # (FREE, [object_id])  the owner let go: drop your pin
PULL = 310           # (PULL, object_id, segment name, offset, length)  send me this chunk
PULL_DATA = 311      # (PULL_DATA, object_id, offset, length[, pushed]) + one raw frame
PULL_RETRY = 312     # (PULL_RETRY, object_id, offset, length)  not in memory yet: ask again
PULL_FAILED = 313    # (PULL_FAILED, object_id, why)
FORWARD_CANCEL = 314  # (FORWARD_CANCEL, object_id, force[, recursive])
ACTOR_RELAY = 317    # (ACTOR_RELAY, actor_id, message)  actors across nodes (agent_remote_actors)
CONTROL = 318        # (CONTROL, [command])  writes for the control store, to its Raft leader
                     #   (to the head while no leader is known)
DESCRIBE = 319       # (DESCRIBE, request id or 0, [object_id])  where are these? (refs a
                     #   process here got from the peer's side); pins them there for us
DESCRIBED = 320      # (DESCRIBED, request id or 0, [(object_id, descriptor)])  the answer;
                     #   ("wait",): not ready yet there, ask again
JOIN_REFUSED = 321   # (JOIN_REFUSED, why)  the head will not admit this agent (another
                     #   protocol version, say): it prints why and exits; sent as a
                     #   REFUSAL frame (encode_refusal), which every version reads
RAFT = 322           # (RAFT, bytes)  a message between control replicas, in the Raft
                     #   codec's format (lightray.store.control.raft.codec; never pickled)
KV_REQUEST = 323     # (KV_REQUEST, request id, request)  a lightray.kv request, to the
                     #   control leader (or a replica, for a read)
KV_REPLY = 324       # (KV_REPLY, request id, answer)  its answer (kv_requests)
JOIN_VIA = 325       # (JOIN_VIA, node dict)  a member that is not the authority relays a
                     #   JOIN to it; the authority answers the joiner itself (MEMBERS)
STATE_QUERY = 326    # (STATE_QUERY, query id, kind)  lightray.state: your rows of this kind
STATE_REPLY = 327    # (STATE_REPLY, query id, [row])  rows: lists of plain values
                     #   (lightray.observe.queries)

# Frames at least this large are handed to ZeroMQ without a copy (it keeps a
# reference to the bytes until they are sent); smaller ones are cheaper to copy.
ZERO_COPY_MIN = 64 * 1024


# The layout of the header is fixed for every version; the version byte
# changes whenever the ops (their codes, shapes or meaning) do.
PROTOCOL_VERSION = 5   # 2: RAFT, and CONTROL goes to the control leader; 3: KV ops;
                       # 4: JOIN_VIA, incarnations (NODE_DEAD names one; a dead node
                       # joins again); 5: STATE_QUERY / STATE_REPLY
MAGIC = b"LR"
OPS = 0
REFUSAL = 1
HEADER_SIZE = 4
_HEADER = MAGIC + bytes((PROTOCOL_VERSION, OPS))
_REFUSAL_HEADER = MAGIC + bytes((PROTOCOL_VERSION, REFUSAL))
_COPY_BELOW = 64 * 1024   # smaller bodies are sliced (a copy, cheaper than a memoryview)
_MAX_REFUSAL = 4096       # characters of a refusal's text kept

_dumps = pickle.dumps
_loads = pickle.loads


class BadMessage(ValueError):
    """A frame that is not a message of this protocol; str() names the problem.
    ``version`` is the sender's protocol version when the header said one
    (another than ours), else None."""

    def __init__(self, problem: str, version: int | None = None):
        super().__init__(problem)
        self.version = version


def encode(ops: list) -> bytes:
    """One frame: the header and ops pickled."""
    return _HEADER + _dumps(ops, 5)


def encode_refusal(why: str) -> bytes:
    """A REFUSAL frame, which decodes as [(JOIN_REFUSED, why)] in every version."""
    return _REFUSAL_HEADER + why[:_MAX_REFUSAL].encode("utf-8", "replace")


def decode(frame) -> list:
    """The ops of a frame (bytes, or any buffer: a memoryview of a ZeroMQ frame);
    BadMessage if it has no header, another version, or does not unpickle to a list."""
    if frame[:HEADER_SIZE] != _HEADER:
        return _decode_other(frame)
    if len(frame) < _COPY_BELOW:
        body = frame[HEADER_SIZE:]
    else:
        body = memoryview(frame)[HEADER_SIZE:]   # large: no copy of its bytes
    try:
        ops = _loads(body)
    except Exception as error:   # garbage may raise nearly anything while unpickling
        raise BadMessage(f"its body does not unpickle ({type(error).__name__})") from None
    if type(ops) is not list:
        raise BadMessage(f"its body is a {type(ops).__name__}, not a list of ops")
    return ops


def _decode_other(frame) -> list:
    """A frame whose first bytes are not our OPS header: a refusal (readable
    whatever its version), else BadMessage saying why."""
    head = bytes(frame[:HEADER_SIZE])
    if len(head) < HEADER_SIZE or head[:2] != MAGIC:
        raise BadMessage(f"it has no lightray header ({len(frame)} bytes starting "
                         f"{head[:HEADER_SIZE]!r}: not lightray, or a version before "
                         f"{PROTOCOL_VERSION})")
    if head[3] == REFUSAL:
        text = bytes(frame[HEADER_SIZE:HEADER_SIZE + 4 * _MAX_REFUSAL])
        return [(JOIN_REFUSED, text.decode("utf-8", "replace")[:_MAX_REFUSAL])]
    if head[2] != PROTOCOL_VERSION:
        raise BadMessage(f"it speaks lightray protocol version {head[2]}, this process "
                         f"version {PROTOCOL_VERSION}", version=head[2])
    raise BadMessage(f"its header names an unknown kind of frame ({head[3]})")
