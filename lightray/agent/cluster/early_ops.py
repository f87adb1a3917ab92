"""Messages from a peer not yet known as a member, held for the authority's word. No I/O.

    peer C ──FORWARD──▶ this agent, before the authority's NODE_JOINED about C
                        (or our own MEMBERS) arrived here: held, not dropped
    the authority ──NODE_JOINED C / MEMBERS──▶ this agent: C's held messages
                        are handled, in the order they came, before anything later
    C never joins (HOLD_SECONDS pass, its JOIN is refused, it says LEAVING):
                        they are dropped and logged as from a node that has not joined

Why: the authority tells every member about a new node at once, so a member
that learned of C first may get work from C (or forward work to C, whose
answers come back) before the NODE_JOINED reaches another member; dropping
that FORWARD would lose the task for good. Nothing held reaches a handler
until the authority has admitted its sender, so a stranger gains nothing by
it (its messages were shape-checked, as every peer's are, and sit in a queue
bounded in messages, bytes, senders and time).
"""
from __future__ import annotations

from ...transport import messages as m

HOLD_SECONDS = 5.0           # a NODE_JOINED is a turn or two behind; a join takes < 1 s
MAX_MESSAGES = 256           # held at most, from all senders together
MAX_BYTES = 32 << 20         # of encoded ops, from all senders together
MAX_SENDERS = 16


class EarlyOps:
    __slots__ = ("_held", "_messages", "_bytes", "drops")

    def __init__(self):
        self._held: dict = {}    # sender -> [first held at, [ops lists], bytes]
        self.drops: list = []    # (sender, why): held messages dropped, for the log
        self._messages = 0
        self._bytes = 0

    def __bool__(self) -> bool:
        return bool(self._held)

    def hold(self, sender: str, ops: list, size: int, now: float) -> bool:
        """Keep ops from sender for later; False when that is over a bound
        (the caller drops them)."""
        entry = self._held.get(sender)
        if entry is None and len(self._held) >= MAX_SENDERS:
            return False
        if self._messages >= MAX_MESSAGES or self._bytes + size > MAX_BYTES:
            return False
        if entry is None:
            entry = self._held[sender] = [now, [], 0]
        entry[1].append(ops)
        entry[2] += size
        self._messages += 1
        self._bytes += size
        return True

    def senders(self) -> list:
        return list(self._held)

    def take(self, sender: str) -> list:
        """The ops lists held from sender, oldest first (none are kept)."""
        entry = self._held.pop(sender, None)
        if entry is None:
            return []
        self._messages -= len(entry[1])
        self._bytes -= entry[2]
        return entry[1]

    def drop(self, sender: str) -> None:
        """Sender will not join (refused, or it gave up): drop what it sent."""
        held = self.take(sender)
        if held:
            self.drops.append((sender, not_joined(sender, held)))

    def expire(self, now: float) -> None:
        """Drop what the senders held longer than HOLD_SECONDS sent: they never joined."""
        for sender in [s for s, entry in self._held.items() if now - entry[0] > HOLD_SECONDS]:
            self.drop(sender)

    def take_drops(self) -> list:
        """(sender, why) of the held messages dropped since last asked (for the log)."""
        out, self.drops[:] = list(self.drops), []
        return out


_OP_NAMES = {code: name for name, code in vars(m).items()
             if name.isupper() and type(code) is int and 300 < code < 400}


def not_joined(sender: str, messages: list) -> str:
    """The log line for messages (ops lists) dropped from a node that has not joined."""
    names = ", ".join(sorted({_OP_NAMES.get(op[0], str(op[0])) for ops in messages for op in ops}))
    return f"dropped {names} from node {sender}, which has not joined the cluster"
