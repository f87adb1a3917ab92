"""What an agent knows of each peer's liveness: last heard, incarnation, verdict. No I/O.

    every message from a peer ──heard(id, now)──▶ NodeTable
    every heartbeat tick ──overdue(now)──▶ ids silent past dead_after (the
        membership authority declares them dead)
    lightray status, nodes() ──verdict(id, now)──▶ ALIVE, SUSPECT (silent for
        suspect_after s or more) or DEAD
    this agent's own loop stalled (a tick came late) ──forgive(now)──▶ the
        silence was ours: every peer starts a fresh count

Incarnations: a node declared dead that comes back joins again under its
own node id with its incarnation + 1. Every NODE_DEAD names the incarnation
it is about, so one about an earlier incarnation (still in flight when the
node rejoined) is recognised as stale and ignored (``is_current``).

Silence is the only evidence against a stalled node (SIGSTOP, swapping: its
TCP connections stay up); a killed node is found sooner, by refused
reconnects (lightray.transport.peer_watch), which does not go through this
table.
"""
from __future__ import annotations

ALIVE = "alive"
SUSPECT = "suspect"
DEAD = "dead"
SUSPECT_AFTER = 2.0      # seconds of silence after which a peer is shown suspect
STALL_GAP = 1.0          # a tick this late means our own loop stood still


class NodeTable:
    __slots__ = ("dead_after", "suspect_after", "seen", "incarnations", "dead", "last_tick")

    def __init__(self, dead_after: float, suspect_after: float = SUSPECT_AFTER):
        self.dead_after = dead_after            # seconds of silence: dead
        self.suspect_after = min(suspect_after, dead_after)
        self.seen: dict = {}                    # node id -> monotonic time last heard
        self.incarnations: dict = {}            # node id -> its incarnation as known here
        self.dead: set = set()                  # node ids whose current incarnation is dead
        self.last_tick = None                   # monotonic time of the last tick()

    def add(self, node_id: str, incarnation: int, now: float) -> None:
        """A node (re)admitted with this incarnation: alive, heard now."""
        self.incarnations[node_id] = incarnation
        self.seen[node_id] = now
        self.dead.discard(node_id)

    def heard(self, node_id: str, now: float) -> None:
        if node_id in self.seen and node_id not in self.dead:
            self.seen[node_id] = now

    def mark_dead(self, node_id: str) -> None:
        self.dead.add(node_id)

    def incarnation(self, node_id: str) -> int:
        return self.incarnations.get(node_id, 0)

    def is_current(self, node_id: str, incarnation) -> bool:
        """Whether news about this incarnation of node_id is about the one
        known here (not an earlier one); None (an older peer) counts as current."""
        return incarnation is None or incarnation >= self.incarnations.get(node_id, 0)

    def is_newer(self, node_id: str, incarnation: int) -> bool:
        """A JOIN or NODE_JOINED naming an incarnation later than the one known."""
        return node_id in self.incarnations and incarnation > self.incarnations[node_id]

    def silence(self, node_id: str, now: float) -> float:
        return max(0.0, now - self.seen.get(node_id, now))

    def verdict(self, node_id: str, now: float) -> str:
        if node_id in self.dead:
            return DEAD
        silent = self.silence(node_id, now)
        if silent >= self.dead_after:
            return DEAD
        return SUSPECT if silent >= self.suspect_after else ALIVE

    def tick(self, now: float) -> bool:
        """Called every heartbeat interval; True (and every count restarted)
        when this tick came more than STALL_GAP late: this agent itself stood
        still (SIGSTOP, swapping), so the peers' silence meanwhile says nothing
        about them (their messages wait unread in our sockets)."""
        stalled = self.last_tick is not None and now - self.last_tick > STALL_GAP
        self.last_tick = now
        if stalled:
            self.forgive(now)
        return stalled

    def forgive(self, now: float) -> None:
        for node_id in self.seen:
            self.seen[node_id] = now

    def overdue(self, now: float) -> list:
        """The live peers silent for dead_after seconds or more, longest first."""
        late = [(self.seen[n], n) for n in self.seen
                if n not in self.dead and now - self.seen[n] >= self.dead_after]
        return [node_id for _, node_id in sorted(late)]
