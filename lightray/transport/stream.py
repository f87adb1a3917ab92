"""Length-prefixed frames over a stream socket: callers -> a leased worker or an actor.

    listener (worker)                           caller (driver, any process)
      accept: uid check (Unix) ──CHALLENGE──▶   "LRST" version nonce_l
                               ◀──PROOF────     version nonce_c HMAC(key, caller…)
      compare_digest, then     ──CONFIRM──▶     HMAC(key, listener…): checked before
      frames both ways                          any frame is read or written
      (TCP: each sealed; between hosts encrypted, then sealed)

    frame := 4-byte little-endian length (at most MAX_FRAME), then that many
             bytes (a message of lightray.transport.messages: a pickled list of ops)

Why not ZeroMQ for this hop: a ZeroMQ message crosses the I/O threads of
both ends, so a synchronous call costs seven thread wake-ups instead of
three. On a 2-core host that halves the throughput of ``get(a.m.remote())``
(measured here: 6,900 round trips/s through ZeroMQ with an I/O thread hop on
the caller side, 14,600/s over a plain Unix socket). The agent mesh stays on
ZeroMQ; these channels join a caller to a worker on the same host, and an
actor's callers on other nodes (TCP).

Nothing a peer sends is unpickled before it has proved the key (the agent's
``node_info["stream_key"]``: the cluster's stream key, or a random one per
lone agent; None for an --insecure cluster, where the proof uses an empty
key, so anyone can make it): the handshake costs one round trip per
connection, never per frame. A Unix socket's file is 0600 and a peer of
another uid is refused before the challenge. On TCP every frame after the
handshake is sealed (a MAC under per-connection keys over its sequence
number and bytes: injected, altered or replayed frames drop the connection).
A TCP connection that is not loopback at both ends (stream_cipher.encrypts:
an actor's callers on other nodes) also encrypts every frame before sealing
it, and the receiver checks the seal before it decrypts
(lightray.transport.stream_cipher; docs/architecture.md, "Stream sockets").

    sealed frame := length (payload + 32), payload, MAC(direction key, sequence, payload)
    between hosts:  the same, the payload encrypted under the direction's cipher key

Neither side ever blocks on the other: reads and writes are non-blocking,
and what a busy peer cannot take yet waits in an OutBuffer, written when the
socket is writable again (an actor running a long method reads nothing
meanwhile; its callers must not stall on it). The caller's frames wait in
its OutBuffer until the listener confirmed (``held``). The connecting side
writes from any thread under its client's lock and reads in one thread only.
"""
from __future__ import annotations

import hmac
import os
import socket
import struct
import time

from . import messages as m
from .guard import RefusalLog, describe_peer
from .stream_cipher import encrypts
from .stream_frames import (HEADER, MAX_FRAME, FrameReader, FrameTooLarge,  # noqa: F401
                            OutBuffer, frame, receive)
from .stream_proof import (CHALLENGE_SIZE, CONFIRM_SIZE, MAGIC, NONCE,
                           PROOF_SIZE, PROTOCOL_VERSION, BadSeal, HandshakeError,
                           cipher_keys, proof_mac, sealing_keys,
                           stream_key)  # noqa: F401 (callers: stream.stream_key)

HANDSHAKE_TIMEOUT = 10.0       # seconds an accepted peer has to prove the key
MAX_HANDSHAKING = 256          # peers proving at once; a new one evicts the oldest
                               # (as many as the listen backlog: only a flood evicts)
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


def well_formed(ops, arities: dict) -> bool:
    """Whether ops (a decoded frame) is a list of tuples of known kinds, each of
    an arity that kind allows (arities: kind -> (fewest, most) items)."""
    if type(ops) is not list:
        return False
    for op in ops:
        if type(op) is not tuple or not op or type(op[0]) is not int:
            return False
        arity = arities.get(op[0])
        if arity is None or not arity[0] <= len(op) <= arity[1]:
            return False
    return True


# -------------------------------------------------------- the connecting side

# Malformed answers from workers (a bug, never an outsider: the listener proved the key).
_caller_log = RefusalLog("lightray stream caller")
_ANSWER_ARITIES = {m.DIRECT_DONE: (5, 7)}


class CallerStream:
    """The caller's end of one connection: proves the key, checks the
    listener's proof, then frames. Written under ``lock`` by any thread,
    read by one thread (the client's I/O thread)."""

    __slots__ = ("sock", "path", "reader", "out", "key", "expected", "sealing", "shake",
                 "confirming", "lock", "want_writable")

    def __init__(self, sock, path: str, key: bytes, hello: bytes, lock, want_writable):
        self.sock = sock
        self.path = path
        self.reader = FrameReader()
        self.out = OutBuffer(sock, held=frame(hello))
        self.key = key
        self.expected = b""               # the listener's proof, once we know its nonce
        self.sealing = None               # over TCP: ((our Sealer, Cipher), the listener's)
        self.shake = bytearray()          # handshake bytes so far; None once confirmed
        self.confirming = False           # our proof is sent: the listener's is next
        self.lock = lock                  # the client's lock (writes to out)
        self.want_writable = want_writable  # (sock) -> None, lock held

    @property
    def handshaking(self) -> bool:
        return self.shake is not None

    def receive(self):
        """Answers (lists of ops) waiting, possibly none; None once the worker is
        gone (or its stream broke). Raises HandshakeError."""
        if self.shake is not None and not self._handshake():
            return []
        try:
            frames = receive(self.sock, self.reader)
        except (FrameTooLarge, BadSeal) as error:
            _caller_log.note((type(error).__name__, self.path), f"dropped {self.path}: {error}")
            return None
        if not frames:
            return frames
        answers = []
        for payload in frames:
            try:
                ops = m.decode(payload)
            except Exception as error:
                _caller_log.note(("undecodable", self.path), f"skipped an undecodable answer "
                                 f"from {self.path}: {type(error).__name__}")
                continue
            if well_formed(ops, _ANSWER_ARITIES):
                answers.append(ops)
            else:
                _caller_log.note(("malformed", self.path),
                                 f"skipped a malformed answer from {self.path}")
        return answers

    def _handshake(self) -> bool:
        """Read what the listener sent of the handshake; True once it is done."""
        while True:
            size = CONFIRM_SIZE if self.confirming else CHALLENGE_SIZE
            try:
                data = self.sock.recv(size - len(self.shake), socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as error:
                raise HandshakeError(f"{self.path}: the connection broke during the "
                                     f"stream handshake ({error})") from None
            if not data:
                raise HandshakeError(
                    f"{self.path} refused our proof of the stream key (a wrong key, or "
                    f"another protocol version than {PROTOCOL_VERSION})" if self.confirming
                    else f"{self.path} closed the connection before its handshake")
            self.shake += data
            if len(self.shake) < size:
                return False
            if not self.confirming:
                self._answer_challenge(bytes(self.shake))
                self.shake.clear()
                continue
            if not hmac.compare_digest(bytes(self.shake), self.expected):
                raise HandshakeError(f"{self.path} did not prove the stream key: it is "
                                     "not a worker of this cluster")
            self.shake = None
            ours = (None, None)
            if self.sealing is not None:
                ours, (self.reader.key, self.reader.cipher) = self.sealing
            with self.lock:
                if self.out.release(*ours):
                    self.want_writable(self.sock)
            return True

    def _answer_challenge(self, challenge: bytes) -> None:
        if challenge[:len(MAGIC)] != MAGIC:
            raise HandshakeError(f"{self.path} is not a lightray stream socket")
        version = challenge[len(MAGIC)]
        if version != PROTOCOL_VERSION:
            raise HandshakeError(f"{self.path} speaks stream protocol version {version}; "
                                 f"this lightray speaks {PROTOCOL_VERSION}")
        listener_nonce = challenge[len(MAGIC) + 1:]
        nonce = os.urandom(NONCE)
        proof = bytes((PROTOCOL_VERSION,)) + nonce + proof_mac(self.key, b"caller", listener_nonce, nonce)
        self.expected = proof_mac(self.key, b"listener", listener_nonce, nonce)
        if self.sock.family != socket.AF_UNIX:
            seals = sealing_keys(self.key, listener_nonce, nonce)
            ciphers = (cipher_keys(self.key, listener_nonce, nonce) if encrypts(self.sock)
                       else (None, None))
            self.sealing = tuple(zip(seals, ciphers))
        try:
            # The first bytes we write: an empty socket buffer takes them whole.
            sent = self.sock.send(proof, socket.MSG_DONTWAIT)
        except OSError as error:
            raise HandshakeError(f"{self.path}: could not send our proof ({error})") from None
        if sent != len(proof):
            raise HandshakeError(f"{self.path}: could not send our proof at once")
        self.confirming = True


def connect(path: str, key: bytes, hello: bytes, lock, want_writable) -> CallerStream:
    """A stream to the listener at path (a Unix socket, or "tcp://host:port" for
    a listener on another node). Frames written to its ``out`` wait until the
    handshake is done (in ``receive``, when the listener's challenge comes);
    hello goes first. Raises OSError if nothing listens there."""
    if path.startswith("tcp://"):
        host, _, port = path[len("tcp://"):].rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        address = (host, int(port))
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address = path
    try:
        sock.settimeout(10.0)   # a live listener accepts at once
        sock.connect(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return CallerStream(sock, path, key, hello, lock, want_writable)


# ------------------------------------------------------- the listening side

class Peer:
    """One accepted connection of a StreamServer."""

    __slots__ = ("sock", "reader", "out", "identity", "name", "where", "shake", "nonce",
                 "since")

    def __init__(self, sock: socket.socket, name: str, where: str):
        self.sock = sock
        self.reader = FrameReader()
        self.out = OutBuffer(sock)
        self.identity = None           # set by the owner from the peer's hello
        self.name = name               # for reports: "uid 1000" or a TCP peer's host
        self.where = where             # the listener it came to (a path or tcp://host:port)
        self.shake = bytearray()       # its proof so far; None once it proved the key
        self.nonce = os.urandom(NONCE)
        self.since = time.monotonic()

    def fileno(self) -> int:
        return self.sock.fileno()


class StreamServer:
    """The listening side, driven by its owner's poll loop; never blocks.

    Listens on a Unix socket at path (0600) and, given tcp_host, also on a TCP
    port of that host (``tcp_address``: "tcp://host:port"), for callers on
    other nodes. ``read`` gives a peer's frames only once it proved the key;
    ``decode`` gives its ops only if they are of the kinds in arities.
    ``forget(fileno)``, set by the owner, is called before a peer it may poll
    is closed."""

    def __init__(self, path: str, tcp_host: str | None = None, *, key: bytes = b"",
                 arities: dict | None = None, log: RefusalLog | None = None):
        self.path = path
        self.key = key
        self.arities = arities or {}
        self.log = log or RefusalLog("lightray stream")
        self.forget = None
        self.uid = os.getuid()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)    # the socket file is born 0600: no window
        try:
            self.listener.bind(path)
        finally:
            os.umask(old_umask)
        self.listener.listen(256)
        self.listener.setblocking(False)
        self.listeners = {self.listener.fileno(): self.listener}
        self.tcp_address = None
        if tcp_host:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.bind((tcp_host, 0))
            tcp.listen(256)
            tcp.setblocking(False)
            self.listeners[tcp.fileno()] = tcp
            self.tcp_address = f"tcp://{tcp_host}:{tcp.getsockname()[1]}"
        self.peers: dict = {}          # fileno -> Peer
        self.handshaking: dict = {}    # fileno -> Peer not proved yet, oldest first

    def fileno(self) -> int:
        return self.listener.fileno()

    def accept(self, fileno: int | None = None) -> list:
        """The new peers (each sent its challenge), to poll for reading."""
        listener = self.listeners[fileno] if fileno is not None else self.listener
        accepted = []
        while True:
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return accepted
            except OSError as error:   # out of file descriptors, say: try again later
                self.log.note(("accept", type(error).__name__), f"accept failed: {error}")
                return accepted
            peer = self._admit(sock, address)
            if peer is not None:
                accepted.append(peer)

    def _admit(self, sock: socket.socket, address):
        if sock.family == socket.AF_UNIX:
            _pid, uid, _gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
            name = f"uid {uid}"
            if uid != self.uid:
                self.log.note(("uid", uid), f"refused a connection to {self.path} from "
                              f"{name} (only uid {self.uid} may connect)")
                sock.close()
                return None
        else:
            name = describe_peer(address[0])
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        peer = Peer(sock, name, self.path if sock.family == socket.AF_UNIX else self.tcp_address)
        try:
            sock.send(MAGIC + bytes((PROTOCOL_VERSION,)) + peer.nonce, socket.MSG_DONTWAIT)
        except OSError:
            sock.close()
            return None
        if len(self.handshaking) >= MAX_HANDSHAKING:
            # Someone opens connections and never proves: the oldest goes.
            self.drop(next(iter(self.handshaking.values())), "too many peers not proving "
                      "the stream key at once")
        self.peers[sock.fileno()] = peer
        self.handshaking[sock.fileno()] = peer
        return peer

    def read(self, peer: Peer):
        """Frames from a peer that proved the key (possibly none), or None once
        it is gone or dropped (closed here: the owner forgets it)."""
        if peer.shake is not None and not self._check_proof(peer):
            return None if peer.sock.fileno() == -1 else []
        try:
            frames = receive(peer.sock, peer.reader)
        except FrameTooLarge as error:
            self.drop(peer, str(error), "oversized")
            return None
        except BadSeal as error:
            self.drop(peer, str(error), "seal")
            return None
        if frames is None:
            self.drop(peer)
        return frames

    def _check_proof(self, peer: Peer) -> bool:
        try:
            data = peer.sock.recv(PROOF_SIZE - len(peer.shake), socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self.drop(peer, "left before proving the stream key", "no proof")
            return False
        peer.shake += data
        if len(peer.shake) < PROOF_SIZE:
            return False
        proof, peer.shake = bytes(peer.shake), None
        if proof[0] != PROTOCOL_VERSION:
            self.drop(peer, f"speaks stream protocol version {proof[0]}, we speak "
                      f"{PROTOCOL_VERSION}", "version")
            return False
        caller_nonce = proof[1:1 + NONCE]
        if not hmac.compare_digest(proof[1 + NONCE:],
                                   proof_mac(self.key, b"caller", peer.nonce, caller_nonce)):
            self.drop(peer, "did not prove the stream key (a wrong key, or none)", "proof")
            return False
        del self.handshaking[peer.sock.fileno()]
        if peer.sock.family != socket.AF_UNIX:
            peer.reader.key, peer.out.key = sealing_keys(self.key, peer.nonce, caller_nonce)
            if encrypts(peer.sock):
                peer.reader.cipher, peer.out.cipher = cipher_keys(self.key, peer.nonce,
                                                                  caller_nonce)
        try:
            peer.sock.send(proof_mac(self.key, b"listener", peer.nonce, caller_nonce),
                           socket.MSG_DONTWAIT)
        except OSError:
            self.drop(peer)
            return False
        return True

    def decode(self, peer: Peer, payload):
        """The ops of one frame of peer's, or None if it is not a list of
        well-formed ops of the kinds this server takes (the peer is dropped)."""
        try:
            ops = m.decode(payload)
        except Exception as error:
            self.drop(peer, f"sent a frame that does not unpickle ({type(error).__name__})",
                      "undecodable")
            return None
        if not well_formed(ops, self.arities):
            self.drop(peer, "sent a frame that is not a list of ops it may send", "malformed")
            return None
        return ops

    def expire(self, now: float) -> None:
        """Drop the peers that have not proved the key within HANDSHAKE_TIMEOUT."""
        for peer in list(self.handshaking.values()):
            if now - peer.since < HANDSHAKE_TIMEOUT:
                break   # the rest came later
            # Its proof may be waiting: our owner (an actor in a long method) did
            # not read for a while. Only a peer that sent none is dropped.
            if not self._check_proof(peer) and peer.sock.fileno() != -1:
                self.drop(peer, f"did not prove the stream key within "
                          f"{HANDSHAKE_TIMEOUT:.0f} s", "slow")

    def drop(self, peer: Peer, why: str = "", kind: str = "") -> None:
        """Close one peer's connection; why (with kind, what is logged once a
        minute per peer and kind): it was refused."""
        fileno = peer.sock.fileno()
        if fileno == -1:
            return
        if why:
            self.log.note((kind or why, peer.name),
                          f"dropped a connection to {peer.where} from {peer.name}: {why}")
        self.peers.pop(fileno, None)
        self.handshaking.pop(fileno, None)
        if self.forget is not None:
            self.forget(fileno)
        peer.sock.close()

    def close(self) -> None:
        for peer in list(self.peers.values()):
            peer.sock.close()
        self.peers.clear()
        self.handshaking.clear()
        for listener in self.listeners.values():
            listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
