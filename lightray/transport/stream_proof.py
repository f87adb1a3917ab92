"""The proofs of lightray's stream sockets: the key handshake and the seals of TCP frames.

lightray.transport.stream drives the handshake and the frames; this module
holds what is cryptographic about them, so it can be read (and reviewed) alone:

    challenge := MAGIC, PROTOCOL_VERSION, the listener's nonce
    proof     := PROTOCOL_VERSION, the caller's nonce, proof_mac(key, b"caller", ...)
    confirm   := proof_mac(key, b"listener", ...)

Both MACs cover both nonces, so neither side's proof can be replayed on
another connection. On TCP each direction then gets a sealing key of its own
(sealing_keys) and every frame a tag over its sequence number and bytes; off
loopback also a cipher key of its own (cipher_keys, for
lightray.transport.stream_cipher), the frame encrypted before it is sealed.
Every key is a MAC of both nonces under the stream key with a label of its
own, so no two keys of a connection, nor of two connections, are the same.
"""
from __future__ import annotations

import hashlib
import hmac
import struct

from .stream_cipher import Cipher

PROTOCOL_VERSION = 2           # of the handshake and the frames after it
                               # (2: frames between hosts are encrypted)
MAGIC = b"LRST"
NONCE = 32
CHALLENGE_SIZE = len(MAGIC) + 1 + NONCE      # magic, version, listener's nonce
PROOF_SIZE = 1 + NONCE + 32                   # version, caller's nonce, caller's MAC
CONFIRM_SIZE = 32                              # listener's MAC
TAG_SIZE = 32                                  # a sealed frame's MAC
SEQUENCE = struct.Struct("<Q")
LARGE_FRAME = 64 << 10                         # from here on frames are sealed by HMAC-SHA256
LABEL = b"lightray stream handshake\x00"


class HandshakeError(ConnectionError):
    """The listener refused our proof, or could not prove the key itself."""


def stream_key(node_info: dict) -> bytes:
    """The key this process proves on stream sockets (b"": an --insecure cluster)."""
    return node_info.get("stream_key") or b""


def proof_mac(key: bytes, role: bytes, listener_nonce: bytes, caller_nonce: bytes) -> bytes:
    return hmac.new(key, LABEL + role + listener_nonce + caller_nonce,
                    hashlib.sha256).digest()


def sealing_keys(key: bytes, listener_nonce: bytes, caller_nonce: bytes) -> tuple:
    """(the caller's, the listener's) Sealers of the frames of one TCP connection."""
    return (Sealer(proof_mac(key, b"caller frames", listener_nonce, caller_nonce)),
            Sealer(proof_mac(key, b"listener frames", listener_nonce, caller_nonce)))


def cipher_keys(key: bytes, listener_nonce: bytes, caller_nonce: bytes) -> tuple:
    """(the caller's, the listener's) Ciphers of the frames of one TCP connection."""
    return (Cipher(proof_mac(key, b"caller cipher", listener_nonce, caller_nonce)),
            Cipher(proof_mac(key, b"listener cipher", listener_nonce, caller_nonce)))


class BadSeal(ValueError):
    """A sealed frame whose tag is wrong: altered, replayed or injected on the way."""


class Sealer:
    """Makes the seal of frames in one direction of one connection: a MAC
    under that direction's key, over the frame's sequence number and payload.
    Keyed BLAKE2b for small frames (0.7 us, against 1.8 us for HMAC-SHA256
    here), HMAC-SHA256 for large ones (60 ms per 100 MB with the CPU's SHA
    instructions, against 116 ms), under a key of its own derived from the
    direction's key."""

    __slots__ = ("small", "large")

    def __init__(self, key: bytes):
        self.small = hashlib.blake2b(key=key, digest_size=TAG_SIZE)
        self.large = hmac.new(hashlib.sha256(b"large frames" + key).digest(),
                              digestmod=hashlib.sha256)

    def tag(self, sequence: int, payload) -> bytes:
        mac = (self.small if len(payload) < LARGE_FRAME else self.large).copy()
        mac.update(SEQUENCE.pack(sequence))
        mac.update(payload)
        return mac.digest()
