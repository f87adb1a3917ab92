"""The control plane's decisions: who is a control replica, where a write goes. No I/O.

    leader, every Raft tick ── next_voter_change(voters, members, wanted) ──▶
        ("remove", id)  a voter whose node was declared dead
        ("add", id)     the first live agent (in join order) that is not a voter,
                        while there are fewer than wanted
        None            nothing to change
    any agent, a write ── write_destination(...) ──▶ the node id to send it to, or None

The agent's I/O side (lightray.agent.server) holds the ControlReplica
(lightray.store.control.replica) and carries these decisions out: it proposes
the change (the Raft core refuses a second one until the first is committed:
one voter at a time) and sends writes with the CONTROL op. This module only
decides, from plain values, so its rules are tested without sockets.

The membership authority is the control leader (the head while no leader is
known): it says who joined and who died and writes the node_* commands
(lightray.agent.cluster.membership).
"""
from __future__ import annotations

LEADER = "leader"        # a node's control role, as heartbeats and lightray.nodes() show it
REPLICA = "replica"      # a voter that is not the leader (None: not a replica)
DEFAULT_REPLICAS = 3

# Commands only the head writes (lightray.agent.cluster.admission, membership).
HEAD_COMMANDS = frozenset({"node_register", "node_heartbeat", "node_dead", "node_rejoin"})


def replica_count(text) -> int:
    """--control-replicas: a whole number >= 1; ValueError naming the problem."""
    try:
        count = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"--control-replicas must be a whole number >= 1, got {text!r}") \
            from None
    if count < 1:
        raise ValueError(f"--control-replicas must be a whole number >= 1, got {text!r}")
    return count


def role(has_replica: bool, is_leader: bool, is_voter: bool):
    """This node's control role: LEADER, REPLICA or None."""
    if not has_replica:
        return None
    if is_leader:
        return LEADER
    return REPLICA if is_voter else None


def next_voter_change(voters, members, wanted: int):
    """The next membership change a leader should propose, or None.

    voters: the current voter ids. members: (node id, alive, heard) for every
    node this agent knows, in join order (the head first); heard: its
    heartbeats come in (an agent that has only just joined is not added yet: a
    voter that never answers would stall every commit). A voter declared dead
    is removed first (a dead voter counts against the quorum, and adding a
    member before removing it would make the quorum larger, not safer); then
    live non-voters are added, one at a time, until there are wanted voters."""
    alive = {member[0]: member[1] for member in members}
    for voter in voters:
        if alive.get(voter) is False and len(voters) > 1:
            return ("remove", voter)
    if len(voters) < wanted:
        for node_id, is_alive, heard in members:
            if is_alive and heard and node_id not in voters:
                return ("add", node_id)
    return None


def known_leader(replica_leader, peer_roles) -> str | None:
    """Who leads the control plane as far as this agent knows: its own replica's
    word first (it follows the Raft terms), else the live peer whose heartbeat
    says it leads. peer_roles: (node id, alive, role) of the peers."""
    if replica_leader is not None:
        return replica_leader
    for node_id, alive, peer_role in peer_roles:
        if alive and peer_role == LEADER:
            return node_id
    return None


def write_destination(node_id: str, leader, head_id, forwarded: bool):
    """Where writes this agent cannot propose itself go: to the leader; writes
    made here go to the head while no leader is known. Writes another agent
    sent us are forwarded only to a known leader (never back to the head on a
    guess: two agents each guessing the other could bounce them forever).
    None: they are dropped (nobody to take them now)."""
    if leader is not None and leader != node_id:
        return leader
    if not forwarded and head_id is not None and head_id != node_id:
        return head_id
    return None
