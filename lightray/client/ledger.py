"""The reference ledger: which objects this process holds, and what the agent must be told.

    ObjectRef() ──add()──▶ counts ──0→1──▶ deltas: (INC, id)  ─┐
    ObjectRef.__del__ ──▶ pending_decs ──apply_pending_decs()─▶ │ (DEC, id) on 1→0
                                                                ▼
                          take_ops() ──▶ [(INC, [ids]), (DEC, [ids]), ...] ──▶ the connection sends them

Pure bookkeeping: no sockets, no threads, no I/O. Every method except the
``pending_decs.append`` done by ``ObjectRef.__del__`` expects the caller to
hold the client's lock; the ledger decides which messages to send, the
caller sends them (in front of whatever it sends next, so the agent sees
them in order).

Each process counts its live ObjectRefs per object and tells the agent only
about the 0->1 (INC) and 1->0 (DEC) transitions. Two exceptions:

* owned: refs the agent counted for us already (a task's or a put's results,
  counted on SUBMIT/PUT): their first local ref sends no INC, and the agent
  pushes their values to us unasked.
* unregistered: results only this process knows of (direct tasks, actor
  calls): the agent has never heard of them, so dropping the last ref sends
  no DEC. Before such a ref *escapes* (pickled into a task's arguments, a
  put value, an actor call) the agent must be told first: ``escape`` turns
  it into a REGISTER, with its value when it is here, else as a *promise*
  (``promised``) fulfilled by a second REGISTER when the value comes
  (``settle``).
"""
from __future__ import annotations

import collections

from ..transport import messages as m


class RefLedger:
    """Local ref counts and the INC/DEC/REGISTER messages they call for."""

    __slots__ = ("pending_decs", "counts", "owned", "unregistered", "promised",
                 "_deltas", "_on_last_ref")

    def __init__(self, on_last_ref=None):
        self.pending_decs = collections.deque()   # ids from ObjectRef.__del__, lock-free
        self.counts: dict = {}                    # object id -> live local refs (> 0)
        self.owned: set = set()                   # ids the agent counted for us (pushed unasked)
        self.unregistered: set = set()            # results only this process knows of
        self.promised: set = set()                # registered before their value came
        self._deltas: list = []                   # [(INC|DEC, object id)] in order
        self._on_last_ref = on_last_ref           # called with an id whose last ref dropped

    # --------------------------------------------------------- counting

    def add(self, object_id: bytes, owned: bool) -> None:
        """A new local ref; owned: the agent counts it for us already."""
        if self.pending_decs:
            self.apply_pending_decs()
        count = self.counts.get(object_id, 0)
        self.counts[object_id] = count + 1
        if count == 0:
            if owned:
                self.owned.add(object_id)
            else:
                self._deltas.append((m.INC, object_id))

    def apply_pending_decs(self) -> None:
        """Apply the decrements queued by ObjectRef.__del__, in order."""
        counts = self.counts
        pending = self.pending_decs
        pop = pending.popleft
        while pending:
            object_id = pop()
            count = counts.get(object_id, 0) - 1
            if count > 0:
                counts[object_id] = count
            elif count == 0:
                del counts[object_id]
                if object_id in self.unregistered:
                    self.unregistered.discard(object_id)   # the agent never knew it
                else:
                    self._deltas.append((m.DEC, object_id))
                self.owned.discard(object_id)
                if self._on_last_ref is not None:
                    self._on_last_ref(object_id)

    def holds(self, object_id: bytes) -> bool:
        return object_id in self.counts

    @property
    def dirty(self) -> bool:
        """Whether take_ops() would return anything (decrements not applied yet count)."""
        return bool(self.pending_decs or self._deltas)

    def take_ops(self) -> list:
        """The INC/DEC ops due, consecutive ones of a kind folded into one op
        with a list of ids; the ledger forgets them (the caller sends them)."""
        if self.pending_decs:
            self.apply_pending_decs()
        if not self._deltas:
            return []
        ops = []
        last_kind = None
        for kind, object_id in self._deltas:
            if kind == last_kind:
                ops[-1][1].append(object_id)
            else:
                ops.append((kind, [object_id]))
                last_kind = kind
        self._deltas = []
        return ops

    # ------------------------------------------- results known only here

    def add_unregistered(self, object_ids) -> None:
        """Results of a call answered to us directly: the agent does not know them."""
        self.unregistered.update(object_ids)

    def escape(self, object_ids, payloads) -> list:
        """REGISTER ops for the unregistered ones among object_ids, which other
        processes are about to see: with their payload (looked up in the
        payloads mapping) or, not here yet, as a promise."""
        ops = []
        unregistered = self.unregistered
        if not unregistered:
            return ops
        for object_id in object_ids:
            if object_id in unregistered:
                unregistered.discard(object_id)
                payload = payloads.get(object_id)
                if payload is None:
                    self.promised.add(object_id)
                ops.append((m.REGISTER, object_id, payload, []))
        return ops

    def settle(self, object_ids, payloads, registered: bool) -> tuple:
        """(ops to send, ready items) for results answered to us directly.
        registered: the answering worker registered them with the agent,
        which now counts our ref (DEC if we dropped it meanwhile); else a
        promised result is fulfilled with a second REGISTER."""
        ops, items = [], []
        counts = self.counts
        for object_id, payload in zip(object_ids, payloads):
            if registered:
                self.promised.discard(object_id)
                if object_id in self.unregistered:
                    self.unregistered.discard(object_id)
                    if object_id not in counts:
                        ops.append((m.DEC, [object_id]))
            elif object_id in self.promised:
                self.promised.discard(object_id)
                ops.append((m.REGISTER, object_id, payload, []))
            items.append((object_id, payload))
        return ops, items

    def resubmitted(self, object_ids) -> list:
        """The results of a direct task sent again through the agent, which
        counts our refs to them on SUBMIT: a DEC op for those we dropped."""
        for object_id in object_ids:
            self.unregistered.discard(object_id)
            self.promised.discard(object_id)
        gone = [i for i in object_ids if i not in self.counts]
        return [(m.DEC, gone)] if gone else []

    def awaits_registration(self, object_id: bytes) -> bool:
        """Whether the agent has no value for object_id from us yet (unregistered or promised)."""
        return object_id in self.unregistered or object_id in self.promised
