"""Actor channels as pure state: what a notice from the agent does to a channel.

    agent ── ACTOR_STATE(incarnation, state) ──▶ notice_action(channel, ...) ──▶ (drain?, action)
    incarnation died ──▶ take_inflight_for_retry(channel) ──▶ back to the queue's front, or failed

States: NEW (waiting for the agent to say where the actor runs) -> ALIVE <->
RESTARTING -> DEAD; ALIVE -> LOST when our connection breaks before the
agent has noticed the death. No sockets here: lightray.client.actor_caller
connects, writes and reads, under the client's lock.
"""
from __future__ import annotations

import collections

NEW, ALIVE, RESTARTING, DEAD = "new", "alive", "restarting", "dead"
LOST = "lost"   # our connection broke: waiting for the agent's word (restart or death)


class Call:
    """One actor call on its way: its spec and the refs it keeps alive."""

    __slots__ = ("spec", "keep", "attempts")

    def __init__(self, spec, keep):
        self.spec = spec
        self.keep = keep          # refs kept alive until the call is answered
        self.attempts = 0


class ActorChannel:
    """This process's line to one actor: where it runs and the calls on their way."""

    __slots__ = ("actor_id", "class_name", "max_task_retries", "state", "incarnation",
                 "worker_id", "sock", "stream", "out", "queued", "inflight",
                 "death", "killed", "remote", "fetching")

    def __init__(self, actor_id: bytes, description: dict):
        self.actor_id = actor_id
        self.class_name = description["class_name"]
        retries = description["max_task_retries"]
        self.max_task_retries = (1 << 30) if retries == -1 else retries
        self.state = NEW
        self.incarnation = -1
        self.worker_id = None
        self.sock = None                     # stream socket to the actor's worker
        self.stream = None                   # its lightray.transport.stream.CallerStream
        self.out = None
        self.queued = collections.deque()    # Calls not sent yet, in order
        self.inflight: dict = {}             # task id -> Call sent, not answered
        self.death = None                    # ERROR payload once DEAD
        self.killed = None                   # ERROR payload: this process killed it
        self.remote = False                  # the actor runs on another node (TCP)
        self.fetching = set()                # argument ids being brought into memory here


def notice_action(channel: ActorChannel, incarnation: int, state: str) -> tuple:
    """(drain, action) for the agent's notice that the actor's incarnation is
    in state: drain: first take the answers waiting in the old connection;
    action: None (nothing to do: stale, already known, or the channel is
    dead), else the state to move to (ALIVE: connect to the new worker;
    RESTARTING: disconnect, retry or fail what was sent; DEAD: fail all)."""
    if channel.state == DEAD or incarnation < channel.incarnation:
        return False, None
    drain = state != ALIVE or channel.incarnation != incarnation
    if state == ALIVE and channel.incarnation == incarnation and channel.state in (ALIVE, LOST):
        return drain, None
    return drain, (state if state in (ALIVE, RESTARTING, DEAD) else None)


def take_inflight_for_retry(channel: ActorChannel) -> list:
    """Empty the calls the dead incarnation had: those with retries left go
    back to the queue's front (in their order, one attempt counted), the
    others are returned, to be failed."""
    retried = []
    failed = []
    for call in channel.inflight.values():
        if call.attempts < channel.max_task_retries:
            call.attempts += 1
            retried.append(call)
        else:
            failed.append(call)
    channel.inflight.clear()
    channel.queued.extendleft(reversed(retried))
    return failed
