"""Actors on other nodes. No I/O.

    creator's agent A ──ACTOR_RELAY create(spec, class, argument descriptors)──▶ B
    B runs it (its worker also listens on TCP)
      ◀──ACTOR_RELAY state(incarnation, state, tcp://host:port, death)── B, on every change
    A tells its local callers; they call the actor over TCP, straight to its worker.
    an agent meeting an actor it does not know (a handle passed to a task here)
      ──ACTOR_RELAY subscribe──▶ every peer; those that know it answer with its state
    get_actor(name) unknown here ──ACTOR_RELAY lookup──▶ every peer; the first hit wins
    kill, last handle dropped, owner gone (at A) ──ACTOR_RELAY kill──▶ B

Refs inside a call's arguments (the call goes from the caller's process on A
straight to the actor's worker on B, so B's agent never saw them):

    actor's worker ──ADOPT_FROM(request, A, [ids]) (before running the method)──▶ B
    B: an unknown id gets a pending entry located at A ──DESCRIBE──▶ A
    A pins each for B (until B's FREE) ──DESCRIBED([(id, inline value, "at"
      <node> layout, "wait" or "unknown")])──▶ B: ready (inline), or REMOTE
      (pulled when read), or asked again shortly ("wait": not ready on A yet;
      "unknown": A has no entry yet, for a bounded number of asks, then lost)
    B ──INFO_REPLY──▶ actor's worker, which answers the call only then

Refs inside a call's results (the answer goes from B's worker straight to
the caller on A; the refs were B's worker's, known to B only):

    actor's worker ──HAND_OVER(A, [ids]) (then a sync: B has it before A can ask)──▶ B
    B pins each for A (as if A had asked already) ──DIRECT_DONE(..., B, ids)──▶ caller
    caller ──ADOPT_FROM(0, B, [ids], handed over) + REGISTER of its results──▶ A, before
      the results are visible to its code (its GETs follow on the same socket)
    A: each unknown id a pending entry located at B ──DESCRIBE(every id)──▶ B, as above;
      held by the registered results; A FREEs B when it lets go

The creator's agent keeps the actor's entry (its name, its handle object,
its lifetime rules) as a *proxy* whose ``home`` is the node running it; the
running node's entry has ``origin`` set and lives until A says kill or A's
node dies. Calls from another node carry their argument values and get
their results inline (the caller cannot map the actor's segments, nor the
actor the caller's). Restarts happen on the node running the actor; an actor
whose node dies is dead (restarting it on another node is not done yet).

The actor's worker sends ADOPT_FROM on the socket its later GETs use, so its
agent has the entries before the method can read them. It answers the call
only once A has pinned the objects for B: the caller, answered, may drop its
own refs at once.

``RemoteActors`` is a part of ``AgentState`` (lightray.agent.state, its
``remote_actors`` field), the cluster side of lightray.agent.actors: it owns
the lookups of named actors asked of the peers, works on the tables and the
Effects it is given, and reaches an actor's life (death, kill, lookup,
notices to callers), object descriptions across nodes and the task path only
through the functions passed to it.
"""
from __future__ import annotations

from ... import exceptions, serialization
from ... import task_spec as ts
from ..actors import _died_payload
from .forwarding import AT, PUSHED, _lost, _units, pin_for
from ..records import ActorEntry, ObjectEntry, Task
from ...serialization import ERROR
from ...states import ALIVE, DEAD, FORWARDED, PENDING, RESTARTING
from ...transport import messages as m

WAIT = "wait"   # DESCRIBED: not ready yet on the describing node, ask again
# DESCRIBED: the describing node has no entry for the id. Either it let go of
# it, or the id's creator on that node passed the ref on (a direct actor
# call) before its own REGISTER reached its agent: the two travel on
# different sockets. So the asker asks again, for a bounded number of
# housekeeping ticks, before it calls the object lost.
UNKNOWN = "unknown"
UNKNOWN_RETRIES = 60   # about 3 s at the 50 ms housekeeping tick


class RemoteActors:
    __slots__ = ("effects", "transitions", "peers", "actors", "tasks", "objects", "functions",
                 "pull_retries", "directory", "node_id", "actor_lookups", "lookup_counter",
                 "unknown_asks", "_describe_for", "_adopt", "_adopt_inner",
                 "_check_satisfiable", "_await_deps",
                 "_actor_died", "_kill_actor", "_actor_lookup", "_notify_actor")

    def __init__(self, effects, transitions, *, peers: dict, actors: dict, tasks: dict,
                 objects: dict, functions: dict, pull_retries: list, directory, node_id: str,
                 describe_for, adopt, adopt_inner, check_satisfiable, await_deps, actor_died,
                 kill_actor, actor_lookup, notify_actor):
        self.effects = effects           # lightray.agent.effects.Effects
        self.transitions = transitions   # lightray.states.Transitions
        self.peers = peers               # node id -> NodeView (the cluster membership's)
        self.actors = actors             # actor id -> ActorEntry
        self.tasks = tasks
        self.objects = objects           # the object table
        self.functions = functions       # function id -> its pickled bytes
        self.pull_retries = pull_retries   # (node id, op) sent again at the next tick
        self.directory = directory       # ObjectDirectory (lightray.agent.objects)
        self.node_id = node_id
        self.actor_lookups: dict = {}    # lookup id -> [identity, request id, peers asked]
        self.lookup_counter = 0
        self.unknown_asks: dict = {}     # object id -> DESCRIBEs answered "unknown" so far
        # objects across nodes (lightray.agent.cluster.forwarding)
        self._describe_for = describe_for      # (node id, object id) -> descriptor
        self._adopt = adopt                    # (origin, object id, descriptor)
        self._adopt_inner = adopt_inner        # (sender, object id, descriptor)
        # the task path (lightray.agent.state)
        self._check_satisfiable = check_satisfiable   # (task) -> False if it failed it
        self._await_deps = await_deps          # (task)
        # an actor's life (lightray.agent.actors)
        self._actor_died = actor_died          # (actor, death payload, tell_home=)
        self._kill_actor = kill_actor          # (actor id, no_restart)
        self._actor_lookup = actor_lookup      # (namespace, name) -> (id, description) | None
        self._notify_actor = notify_actor      # (actor): its state to its callers

    # ---------------------------------------------------------- placement

    def forward_actor(self, actor: ActorEntry, task, node_id: str) -> None:
        spec = actor.spec
        actor.home = node_id
        self.transitions.task(task, FORWARDED, ("actor placed on", node_id))
        task.node = node_id
        view = self.peers[node_id]
        for name, need in _units(task).items():
            view.available[name] = view.available.get(name, 0) - need
        described = [self._describe_for(node_id, object_id)
                     for object_id in spec[ts.DEPS] + spec[ts.CONTAINED]]
        description = actor.description
        if actor.incarnation:
            description = dict(description, incarnation=actor.incarnation,
                               restarts_left=actor.restarts_left)
        self.relay(node_id, actor.actor_id, ("create", spec, self.functions[spec[ts.FUNCTION_ID]],
                                             described, description))

    def relay(self, node_id: str, actor_id: bytes, message: tuple) -> None:
        self.effects.peer_outbox[node_id].append((m.ACTOR_RELAY, actor_id, message))

    def relay_state(self, actor: ActorEntry) -> tuple:
        address = actor.tcp_address if actor.state == ALIVE else None
        return ("state", actor.incarnation, actor.state, address, actor.death,
                actor.description["class_name"])

    # ------------------------------------------------------------- relays

    def on_actor_relay(self, sender: str, op: tuple) -> None:
        actor_id, message = op[1], op[2]
        kind = message[0]
        actor = self.actors.get(actor_id)
        if kind == "create":
            self._on_actor_forward(sender, message[1], message[2], message[3], message[4])
        elif kind == "state":
            if actor is not None and (actor.home is not None or actor.borrowed):
                self._on_home_state(actor, sender, message)
        elif kind == "subscribe":
            if actor is None or (actor.borrowed and actor.state == PENDING):
                self.relay(sender, actor_id, ("unknown",))
                return
            if actor.peer_subscribers is None:
                actor.peer_subscribers = set()
            actor.peer_subscribers.add(sender)
            self.relay(sender, actor_id, self.relay_state(actor))
        elif kind == "unknown":
            if actor is not None and actor.borrowed and actor.unknown_from is not None:
                actor.unknown_from.discard(sender)
                if not actor.unknown_from:
                    self._actor_died(actor, _died_payload(
                        f"the actor {actor_id.hex()} is not known on any node of the cluster"),
                        tell_home=False)
        elif kind == "kill":            # from its owner, or any node holding a handle
            if actor is not None and not actor.borrowed:
                self._kill_actor(actor_id, message[1])
        elif kind == "lookup":
            found = self._actor_lookup(message[2], message[3])
            self.relay(sender, b"", ("found", message[1], found))
        elif kind == "found":
            self._on_lookup_answer(sender, message[1], message[2])

    def _on_actor_forward(self, origin: str, spec: tuple, class_bytes: bytes, described: list,
                          description: dict) -> None:
        """A peer placed an actor here: run it, and keep the peer told."""
        actor_id = spec[ts.TASK_ID]
        if actor_id in self.actors:
            return
        self.functions[spec[ts.FUNCTION_ID]] = class_bytes
        actor = ActorEntry(spec, description, b"")
        actor.origin = origin
        # Restarted here after its node died: go on counting from the owner's.
        actor.incarnation = description.get("incarnation", 0)
        actor.restarts_left = description.get("restarts_left", actor.restarts_left)
        actor.peer_subscribers = {origin}
        self.actors[actor_id] = actor
        for object_id, how in zip(spec[ts.DEPS] + spec[ts.CONTAINED], described):
            self._adopt(origin, object_id, how)
        # Pinned for the actor's life (a restart runs the constructor again),
        # and for the constructor task.
        for _ in range(2):
            self.directory.pin(spec[ts.DEPS])
            self.directory.pin(spec[ts.CONTAINED])
        task = Task(spec, b"")
        task.actor = actor
        task.origin = origin
        self.tasks[actor_id] = task
        if self._check_satisfiable(task):
            self._await_deps(task)

    def _on_home_state(self, actor: ActorEntry, sender: str, message: tuple) -> None:
        """Where a proxy's actor runs, and how it is."""
        _, incarnation, state, address, death, class_name = message
        actor.unknown_from = None
        if actor.borrowed:
            actor.description = dict(actor.description, class_name=class_name)
            if actor.home is None and state != PENDING:
                actor.home = sender
        if actor.state == DEAD or incarnation < actor.incarnation:
            return
        if state == PENDING:
            return
        if state == DEAD:
            self._actor_died(actor, death, tell_home=False)
            return
        if (incarnation, state, address) == (actor.incarnation, actor.state, actor.tcp_address):
            return
        if not actor.borrowed and incarnation > actor.incarnation:
            actor.restarts_left -= incarnation - actor.incarnation   # restarted there
        actor.incarnation = incarnation
        self.transitions.actor(actor, state, ("reported by", sender))
        actor.tcp_address = address
        self._notify_actor(actor)

    def subscribe_remote(self, client, actor_id: bytes) -> None:
        """A process here calls an actor this node does not know: ask the peers."""
        actor = ActorEntry.proxy(actor_id)
        actor.borrowed = True
        actor.subscribers.add(client.identity)
        actor.unknown_from = {n for n, v in self.peers.items() if v.alive}
        self.actors[actor_id] = actor
        for node_id in actor.unknown_from:
            self.relay(node_id, actor_id, ("subscribe",))

    # -------------------------------------------------------------- names

    def lookup_named_remote(self, client, request_id: int, namespace: str, name: str) -> None:
        self.lookup_counter += 1
        asked = {n for n, v in self.peers.items() if v.alive}
        self.actor_lookups[self.lookup_counter] = [client.identity, request_id, asked]
        for node_id in asked:
            self.relay(node_id, b"", ("lookup", self.lookup_counter, namespace, name))

    def _on_lookup_answer(self, sender: str, lookup_id: int, found) -> None:
        pending = self.actor_lookups.get(lookup_id)
        if pending is None:
            return
        pending[2].discard(sender)
        if found is not None or not pending[2]:
            del self.actor_lookups[lookup_id]
            self.effects.outbox[pending[0]].append((m.INFO_REPLY, pending[1], found))

    # ------------------------------------------- refs in calls from other nodes

    def on_adopt_from(self, client, request_id: int, origin: str, object_ids: list) -> None:
        """A call from origin's side brought these refs to client (an actor's
        worker). It holds them from now on, and is told when each is ready
        (this stands for its INC and SUBSCRIBE: an entry made here is never
        freed before the process counts, whatever the order of answers).
        Those unknown here are asked of origin; client is answered once
        origin has pinned them for us."""
        objects = self.objects
        view = self.peers.get(origin)
        reachable = view is not None and view.alive
        ask = []
        for object_id in object_ids:
            entry = objects.get(object_id)
            if entry is None:
                entry = objects[object_id] = ObjectEntry(0, owner=client.client_id)
                if reachable:
                    # Pending and located at origin: an answer awaited from
                    # origin (no other pending entry has a location).
                    entry.location = origin
                    ask.append(object_id)
                else:
                    entry.payload = _lost(object_id, f"node {origin}, which passed a ref to "
                                                     "it, is gone")
                    entry.pending = False
            elif entry.pending and entry.location == origin and reachable:
                ask.append(object_id)     # asked already; this call waits for an answer too
            if object_id not in client.held:
                client.held.add(object_id)
                entry.refs += 1
        self.directory.on_subscribe(client, object_ids)
        if not ask:
            self.effects.outbox[client.identity].append((m.INFO_REPLY, request_id, True))
            return
        # Answered like a lookup: when origin answers, or dies.
        self.lookup_counter += 1
        self.actor_lookups[self.lookup_counter] = [client.identity, request_id, {origin}]
        self.effects.peer_outbox[origin].append((m.DESCRIBE, self.lookup_counter, ask))

    def on_adopt_handed_over(self, origin: str, object_ids: list) -> None:
        """A caller here got results from an actor on origin holding these
        refs; origin keeps each for us (HAND_OVER) until we ask. Every one is
        asked, known here or not, so origin can let go of those we do not need
        its pin for (DESCRIBED then FREE, or an inline value). They are held by
        the results the caller registers right behind this (nobody counts the
        caller: its refs come from reading the results, with INC)."""
        view = self.peers.get(origin)
        reachable = view is not None and view.alive
        objects = self.objects
        for object_id in object_ids:
            if object_id not in objects:
                entry = objects[object_id] = ObjectEntry(0)
                if reachable:
                    entry.location = origin   # pending, awaiting origin's answer
                else:
                    entry.payload = _lost(object_id, f"node {origin}, which returned a ref "
                                                     "to it, is gone")
                    entry.pending = False
        if reachable:
            self.effects.peer_outbox[origin].append((m.DESCRIBE, 0, list(object_ids)))

    def on_hand_over(self, node_id: str, object_ids: list) -> None:
        """An actor's worker here sends results holding these refs to a caller
        on node_id: keep each for node_id until it asks (DESCRIBE), says FREE,
        or dies. Not those whose bytes are on node_id: it needs nothing here."""
        view = self.peers.get(node_id)
        if view is None or not view.alive:
            return
        objects = self.objects
        for object_id in object_ids:
            entry = objects.get(object_id)
            if entry is not None and entry.location != node_id:
                pin_for(node_id, entry)

    def on_describe(self, sender: str, request_id: int, object_ids: list) -> None:
        """Where the objects of refs our processes passed to sender's side are;
        each is pinned here for sender until its FREE (inline values excepted:
        sender has them then)."""
        objects = self.objects
        answers = []
        for object_id in object_ids:
            entry = objects.get(object_id)
            if entry is None:
                how = (UNKNOWN,)
            elif entry.pending:
                how = (WAIT,)
                pin_for(sender, entry)
            else:
                how = self._describe_for(sender, object_id)
                if (how[0] == AT or how[0] == PUSHED) and how[1] != sender:
                    pin_for(sender, entry)
                elif entry.pinned_for and sender in entry.pinned_for:
                    # Pinned while pending, or handed over: an inline value
                    # (sender has it now) or bytes on sender itself.
                    entry.pinned_for.discard(sender)
                    self.directory.unref(object_id)
            answers.append((object_id, how))
        self.effects.peer_outbox[sender].append((m.DESCRIBED, request_id, answers))

    def on_described(self, sender: str, request_id: int, answers: list) -> None:
        objects = self.objects
        again = []
        unwanted = []
        for object_id, how in answers:
            entry = objects.get(object_id)
            if entry is not None and entry.pending and entry.location == sender:
                if how[0] == WAIT:
                    self.unknown_asks.pop(object_id, None)
                    again.append(object_id)
                    continue
                if how[0] == UNKNOWN:
                    asked = self.unknown_asks.get(object_id, 0) + 1
                    if asked < UNKNOWN_RETRIES:
                        self.unknown_asks[object_id] = asked
                        again.append(object_id)
                        continue
                    how = _lost(object_id, f"node {sender}, which passed a ref to it, "
                                           "does not hold it")
                self.unknown_asks.pop(object_id, None)
                entry.location = None
                self._adopt_inner(sender, object_id, how)
            elif how[0] == UNKNOWN:
                self.unknown_asks.pop(object_id, None)   # nothing pinned there for us
            elif (how[0] == WAIT or (how[0] in (AT, PUSHED) and how[1] != self.node_id)) and not (
                    entry is not None and entry.copies and sender in entry.copies):
                # Known here another way (or let go of) meanwhile, and not
                # through sender's pin: sender need not keep it for us.
                unwanted.append(object_id)
        if unwanted:
            self.effects.peer_outbox[sender].append((m.FREE, unwanted))
        if again:
            # Sent within one housekeeping tick (50 ms): the owner's node
            # cannot tell us when it is ready without a hook in every
            # readiness path, and the pin it holds keeps the object meanwhile.
            self.pull_retries.append((sender, (m.DESCRIBE, 0, again)))
        self._on_lookup_answer(sender, request_id, True)

    def _refs_from_dead_node(self, node_id: str, why: str) -> None:
        """Objects we were asking node_id about are lost with it."""
        for object_id, entry in list(self.objects.items()):
            if entry.pending and entry.location == node_id:
                self.unknown_asks.pop(object_id, None)
                entry.location = None
                self.directory.set_ready(object_id, entry, _lost(
                    object_id, f"node {node_id}, which passed a ref to it, died ({why})"), ())

    # ------------------------------------------------------------- failures

    def _live_peers(self) -> set:
        return {n for n, v in self.peers.items() if v.alive}

    def _restart_elsewhere(self, actor: ActorEntry, node_id: str, why: str) -> None:
        """The owner's actor died with its node: place its constructor again
        (on any node that fits); callers re-send their calls when it is alive."""
        actor.restarts_left -= 1
        actor.incarnation += 1
        actor.home = None
        actor.tcp_address = None
        self.transitions.actor(actor, RESTARTING, ("its node died", node_id, why))
        self._notify_actor(actor)
        task = self.tasks.get(actor.actor_id)
        if task is None:
            task = Task(actor.spec, actor.owner)
            task.actor = actor
            self.tasks[actor.actor_id] = task
            self.directory.pin(actor.spec[ts.DEPS])
            self.directory.pin(actor.spec[ts.CONTAINED])
        task.node = None
        if self._check_satisfiable(task):
            self._await_deps(task)

    def on_node_died(self, node_id: str, why: str) -> None:
        self._refs_from_dead_node(node_id, why)
        for actor in list(self.actors.values()):
            if actor.state == DEAD:
                continue
            if actor.home == node_id and not actor.borrowed and actor.restarts_left > 0:
                self._restart_elsewhere(actor, node_id, why)
            elif actor.home == node_id and actor.borrowed and self._live_peers():
                # Only a caller here: its owner (if alive) restarts it elsewhere
                # and answers when asked again; nobody knowing it means dead.
                actor.home = None
                actor.tcp_address = None
                self.transitions.actor(actor, RESTARTING, ("its node died", node_id))
                self._notify_actor(actor)
                actor.unknown_from = self._live_peers()
                for peer in actor.unknown_from:
                    self.relay(peer, actor.actor_id, ("subscribe",))
            elif actor.home == node_id:
                restarts = actor.spec[ts.MAX_RETRIES]
                self._actor_died(actor, (ERROR, serialization.dumps_exception(
                    exceptions.ActorDiedError(
                        f"the actor {actor.description['class_name']} "
                        f"({actor.actor_id.hex()}) died with node {node_id} ({why}); no "
                        f"restarts left (max_restarts={restarts})"))),
                    tell_home=False)
            elif actor.origin == node_id and not actor.description.get("detached"):
                self._actor_died(actor, _died_payload(
                    f"the actor {actor.description['class_name']} ({actor.actor_id.hex()}) "
                    f"was stopped: node {node_id} that created it died ({why})"))
            elif actor.borrowed and actor.unknown_from:
                actor.unknown_from.discard(node_id)
            if actor.peer_subscribers:
                actor.peer_subscribers.discard(node_id)
        for lookup_id, pending in list(self.actor_lookups.items()):
            if node_id in pending[2]:
                self._on_lookup_answer(node_id, lookup_id, None)
