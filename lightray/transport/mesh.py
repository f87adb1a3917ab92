"""The agents' peer mesh: one ROUTER per agent, one DEALER per peer.

    agent A  DEALER(identity=A) ──tcp──▶ ROUTER of B   (A's messages to B)
    agent A  ROUTER ◀──tcp── DEALER(identity=B) of B   (B's messages to A)

Every agent binds one ROUTER socket (``tcp://<bind>:<port>``, loopback unless
told otherwise) and keeps one DEALER connection to each peer it knows, so the
messages from one agent to another arrive in the order they were sent. A
message is one frame of pickled operations (lightray.transport.messages),
optionally followed by one raw data frame (a chunk of an object being pulled),
which is sent without a copy.

CURVE + ZAP: with a cluster key (lightray.transport.keys; every cluster has
one unless started --insecure on loopback) every mesh socket encrypts, the
ROUTER is a CURVE server with the cluster's key pair, every DEALER a CURVE
client presenting that same pair, and a ZAP handler admits only clients whose
public key is the cluster's: anyone else is refused in the handshake, before
any frame reaches lightray (and is logged once a minute, the rest counted).
Connections refused before the ZAP check (a client that does not speak CURVE,
or does not know the cluster's public key) are seen on a socket monitor and
logged the same way (lightray.transport.handshakes); so is a joining agent's
refusal by the head, which ends its join (``join_refused``).
"""
from __future__ import annotations

import re
import socket

import zmq
from zmq.auth.thread import ThreadAuthenticator

from . import messages as m
from .guard import RefusalLog, describe_peer
from .handshakes import HandshakeWatch, JoinRefusal, server_refusal
from .peer_watch import PeerWatch

_HWM = 0              # no high-water mark: peers are few and must not drop messages
_SEND_TIMEOUT_MS = 0  # never block the agent's loop on a slow peer
# Largest mesh message accepted: well above a pulled chunk (tens of MB) plus
# its ops frame; anything larger is a broken or hostile peer.
MAX_MESSAGE_BYTES = 512 << 20


class _ClusterKeyOnly:
    """ZAP credentials check: the client must present the cluster's public key."""

    def __init__(self, public: bytes, refusals: RefusalLog):
        self.public = public
        self.refusals = refusals

    def callback(self, domain, client_key) -> bool:
        if client_key == self.public:
            return True
        # One key for all: a new key pair costs an attacker microseconds, so
        # a key per presented key would let it write a line per connection.
        self.refusals.note(("curve",), f"refused a mesh peer presenting the key "
                                       f"{describe_peer(client_key)} (not this cluster's)")
        return False


class Mesh:
    def __init__(self, context: zmq.Context, node_id: str, bind: str, port: int,
                 cluster_key: tuple | None = None, advertise: str | None = None,
                 key_path: str | None = None):
        self.context = context
        self.node_id = node_id
        self.identity = node_id.encode()
        self.cluster_key = cluster_key
        self.key_path = key_path      # where cluster_key was read from (for messages)
        self.refusals = RefusalLog(f"lightray-agent {node_id}")
        self.join_watch = None        # JoinRefusal of the connection to the head, while joining
        self.router = context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.RCVHWM, _HWM)
        self.router.setsockopt(zmq.SNDHWM, _HWM)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        # A peer that connects again (a new DEALER after it had closed ours,
        # e.g. the authority answering a node it declared dead) takes its node
        # id over from the old connection. Without this ZeroMQ ignores the new
        # connection while the old one lingers (a stalled agent has not read
        # its end yet), and every message on it is lost.
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.authenticator = None
        if cluster_key is not None:
            self.authenticator = ThreadAuthenticator(context)
            self.authenticator.start()
            self.authenticator.configure_curve_callback(
                "lightray", _ClusterKeyOnly(cluster_key[0], self.refusals))
            self.router.zap_domain = b"lightray"
            self.router.curve_server = True
            self.router.curve_secretkey = cluster_key[1]
            self.router.curve_publickey = cluster_key[0]
        self.router_watch = HandshakeWatch.for_server(self.router)
        if port:
            self.router.bind(f"tcp://{bind}:{port}")
            self.port = port
        else:
            self.port = self.router.bind_to_random_port(f"tcp://{bind}")
        # What peers connect to: the bound address, or for a wildcard bind
        # the address given (default: this host's name resolved).
        if advertise is None:
            advertise = bind
            if bind in ("0.0.0.0", "*", "::"):
                advertise = socket.gethostbyname(socket.gethostname())
        self.address = f"{advertise}:{self.port}"
        self.peers: dict = {}         # node id -> DEALER socket
        self.watches: dict = {}       # node id -> PeerWatch of its DEALER (not while joining)

    def connect(self, node_id: str, address: str, joining: bool = False) -> None:
        """A DEALER to the peer at address; joining: it is the head we ask to
        admit us, whose refusal of our key join_refused() then tells."""
        if node_id in self.peers or node_id == self.node_id:
            return
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self.identity)
        sock.setsockopt(zmq.SNDHWM, _HWM)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 0)
        if self.cluster_key is not None:
            public, secret = self.cluster_key[0], self.cluster_key[1]
            sock.curve_serverkey = public
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        if joining:
            self.stop_watching_join()
            self.join_watch = JoinRefusal(HandshakeWatch.for_client(sock), address,
                                          self.cluster_key is not None, self.key_path)
        else:
            self._watch(node_id, sock)
        sock.connect(f"tcp://{address}")
        self.peers[node_id] = sock

    def join_refused(self):
        """Why the head refused this agent's key in the handshake (its join
        cannot succeed), or None while nothing says so."""
        if self.join_watch is None:
            return None
        sock = self.join_watch.watch.sock
        why = self.join_watch.check()
        if self.join_watch.watch is None:   # the handshake succeeded: our key is right
            self.join_watch = None
            self._watch_like_a_peer(sock)
        return why

    def stop_watching_join(self) -> None:
        """Admitted (or leaving): the head's handshakes need no more watching."""
        if self.join_watch is not None:
            sock = self.join_watch.watch.sock if self.join_watch.watch is not None else None
            self.join_watch.close()
            self.join_watch = None
            self._watch_like_a_peer(sock)

    def _watch_like_a_peer(self, sock) -> None:
        """The join connection's one monitor is free: watch it like every peer's
        (once it is keyed by the node id learned from the answer)."""
        for node_id, peer_sock in self.peers.items():
            if peer_sock is sock and node_id not in self.watches and node_id != _JOINING:
                self._watch(node_id, sock)

    def _watch(self, node_id: str, sock) -> None:
        try:
            self.watches[node_id] = PeerWatch(sock)
        except zmq.ZMQError as error:
            # Without it only silence finds the peer dead (later, never wrongly).
            _refusals.note(("watch",), f"cannot watch the connection to peer {node_id}: "
                                       f"{error}")

    def gone_peers(self, now: float) -> list:
        """The peers whose reconnects have been refused for a while since the
        last call: their processes are gone (lightray.transport.peer_watch)."""
        return [node_id for node_id, watch in self.watches.items() if watch.poll(now)]

    def note_refused_handshakes(self) -> None:
        """Report the connections the ROUTER refused in the handshake since the
        last call (one line a minute, the rest counted)."""
        for event, value in self.router_watch.events():
            key, what = server_refusal(event, value, self.cluster_key is not None)
            self.refusals.note(key, what)

    def rename(self, old: str, new: str) -> None:
        """Key a connection by the node id learned after connecting (the head's)."""
        if old in self.peers and new not in self.peers:
            self.peers[new] = self.peers.pop(old)
            if old in self.watches:
                self.watches[new] = self.watches.pop(old)
            elif self.join_watch is None:
                self._watch_like_a_peer(self.peers[new])

    def disconnect(self, node_id: str) -> None:
        sock = self.peers.pop(node_id, None)
        watch = self.watches.pop(node_id, None)
        if watch is not None:
            watch.close()
        if sock is not None:
            if self.join_watch is not None and self.join_watch.watch.sock is sock:
                self.stop_watching_join()
            sock.close(linger=200)   # a last word (NODE_DEAD to a dropped node) may be queued

    def send(self, node_id: str, ops: list, data=None) -> bool:
        """Queue ops (and one raw frame) for a peer; False if it is unknown."""
        sock = self.peers.get(node_id)
        if sock is None:
            return False
        frame = m.encode(ops)
        try:
            if data is None:
                sock.send(frame, zmq.NOBLOCK, copy=len(frame) < m.ZERO_COPY_MIN)
            else:
                sock.send_multipart([frame, data], zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    def receive(self, peer: str | None = None):
        """(sender node id, frames) of the next well-formed message, or None if
        none waits. Never raises on what arrives: a message whose identity is
        not a node id, or that is not one frame of ops plus at most one data
        frame, is dropped and reported (once per peer a minute). With peer:
        the next message that peer's ROUTER sent back on our connection to it
        (a refusal of our JOIN), as (peer, frames)."""
        if peer is not None:
            sock = self.peers.get(peer)
            if sock is None:
                return None
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return None
            except zmq.ZMQError:
                return None
            if len(frames) == 1:
                return peer, frames
            _refusals.note(("frames", peer), f"dropped a message of {len(frames)} "
                               f"frames from peer {describe_peer(peer)} on our connection")
            return None
        for _ in range(_DROPPED_PER_CALL):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return None
            except zmq.ZMQError as error:   # e.g. a message over the size limit
                _refusals.note(("error", str(error)), f"a mesh message was lost: {error}")
                continue
            identity = frames[0].bytes
            sender = _node_id(identity)
            if sender is None:
                _refusals.note(("identity", identity[:64]),
                                   f"dropped a message from a peer whose identity "
                                   f"{describe_peer(identity)} is not a node id")
            elif not 2 <= len(frames) <= 3:
                _refusals.note(("frames", sender),
                                   f"dropped a message of {len(frames) - 1} frames (not 1 or 2)"
                                   f" from peer {describe_peer(sender)}")
            else:
                return sender, frames[1:]
        return None   # a flood of bad messages: let the loop serve others first

    def close(self, linger_ms: int = 0) -> None:
        """Close every socket, giving queued messages (a goodbye) linger_ms to leave."""
        self.stop_watching_join()
        self.router_watch.close()
        for watch in self.watches.values():
            watch.close()
        self.watches.clear()
        for sock in self.peers.values():
            sock.close(linger=linger_ms)
        self.peers.clear()
        self.router.close(linger=0)
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


# What Mesh.receive drops: reported once per peer (or kind of problem) a minute.
_refusals = RefusalLog("lightray-agent: mesh")
_JOINING = "head"            # the join connection's key until the node id is known
_DROPPED_PER_CALL = 256       # bad messages skipped in one receive call at most
_NODE_ID = re.compile(rb"[A-Za-z0-9_.-]{1,64}")


def _node_id(identity: bytes) -> str | None:
    """The node id a DEALER's identity names, None if it is not one (a node
    id is ASCII: lightray.ids.random_hex)."""
    if _NODE_ID.fullmatch(identity) is None:
        return None
    return identity.decode("ascii")
