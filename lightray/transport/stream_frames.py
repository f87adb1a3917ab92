"""The frames of a stream socket: reading them out of bytes, queueing them to write.

    frame := 4-byte little-endian length (at most MAX_FRAME), then that many bytes
    (TCP, after the handshake: the payload, encrypted between hosts, then its 32-byte seal)

FrameReader cuts what a socket delivers into frames (checking each seal,
then decrypting, when the connection is sealed); OutBuffer holds what a busy
peer cannot take yet and writes it when the socket is writable again, so
neither end ever blocks on the other. lightray.transport.stream runs the
handshakes and the connections that use them.
"""
from __future__ import annotations

import hmac
import socket
import struct

from .stream_cipher import Cipher
from .stream_proof import LARGE_FRAME, TAG_SIZE, BadSeal, Sealer

HEADER = struct.Struct("<I")
MAX_FRAME = 1 << 30            # bytes a frame may declare; more drops the connection
_READ_SIZE = 1 << 18


class FrameTooLarge(ValueError):
    """A frame longer than MAX_FRAME: the stream cannot be trusted any more."""


class FrameReader:
    """Cuts the frames out of the bytes of one stream. It holds at most one
    partial frame (of at most MAX_FRAME bytes) and one read. Given a ``key``
    (TCP streams, after the handshake) each frame ends in its seal, checked
    and cut off here (BadSeal); given a ``cipher`` too (between hosts), a
    frame whose seal is right is then decrypted."""

    __slots__ = ("buffer", "key", "cipher", "sequence")

    def __init__(self):
        self.buffer = bytearray()
        self.key = None                # the peer's Sealer, or None: unsealed
        self.cipher = None             # the peer's Cipher, or None: not encrypted
        self.sequence = 0              # of the next sealed frame

    def feed(self, data: bytes) -> list:
        buffer = self.buffer
        if not buffer and len(data) >= 4:
            # The common case: the data holds exactly one whole frame.
            size = HEADER.unpack_from(data)[0]
            if len(data) == size + 4:
                if self.key is None:
                    return [memoryview(data)[4:]]
                return self._unseal([memoryview(data)[4:]])
        buffer += data
        frames = []
        position = 0
        available = len(buffer)
        while available - position >= 4:
            size = HEADER.unpack_from(buffer, position)[0]
            if size > MAX_FRAME:
                buffer.clear()
                raise FrameTooLarge(f"a frame declares {size} bytes (at most {MAX_FRAME})")
            end = position + 4 + size
            if end > available:
                break
            # An encrypted frame is decrypted in place: a bytearray of its own.
            frames.append(bytes(buffer[position + 4:end]) if self.cipher is None
                          else buffer[position + 4:end])
            position = end
        if position:
            del buffer[:position]
        if self.key is not None and frames:
            return self._unseal(frames)
        return frames

    def _unseal(self, frames: list) -> list:
        opened = []
        for sealed in frames:
            view = memoryview(sealed)
            payload = view[:-TAG_SIZE]
            if len(view) < TAG_SIZE or not hmac.compare_digest(
                    view[-TAG_SIZE:], self.key.tag(self.sequence, payload)):
                raise BadSeal("a frame's seal is wrong (altered, replayed or injected)")
            if self.cipher is not None:
                # Only now, its seal checked: the ciphertext is the sender's.
                if payload.readonly:
                    payload = memoryview(self.cipher.applied(self.sequence, payload))
                else:
                    self.cipher.apply(self.sequence, payload, payload)
            self.sequence += 1
            opened.append(payload)
        return opened


class OutBuffer:
    """Non-blocking writes of frames to one socket, with what is left over.
    While ``held`` (the caller's handshake is not done) frames only queue.
    Given a ``key`` (TCP streams, after the handshake) each frame is sealed;
    given a ``cipher`` too (between hosts), encrypted first."""

    __slots__ = ("sock", "pending", "held", "key", "cipher", "sequence")

    def __init__(self, sock: socket.socket, held: bytes = b""):
        self.sock = sock
        self.pending = bytearray(held)
        self.held = bool(held)        # then pending is never empty: send() only queues
        self.key = None               # our Sealer, or None: unsealed
        self.cipher = None            # our Cipher, or None: not encrypted
        self.sequence = 0             # of the next sealed frame

    def send(self, payload) -> bool:
        """Write a frame, or queue it; True if something waits for writability."""
        if len(payload) > MAX_FRAME - TAG_SIZE:
            raise FrameTooLarge(f"a message of {len(payload)} bytes is over the "
                                f"{MAX_FRAME}-byte limit of a stream frame")
        if self.key is None or self.held:
            data = HEADER.pack(len(payload)) + payload
        else:
            data = self._sealed(payload)
        if self.pending:
            self.pending += data
            return True
        try:
            sent = self.sock.send(data, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return False   # the peer is gone: the reading side will see it
        if sent < len(data):
            self.pending += memoryview(data)[sent:]
            return True
        return False

    def flush(self) -> bool:
        """Write what waits; True while some still does (and may be written)."""
        if self.held:
            return False   # release() writes it
        try:
            sent = self.sock.send(self.pending, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self.pending.clear()
            return False
        del self.pending[:sent]
        return bool(self.pending)

    def _sealed(self, payload):
        sequence = self.sequence
        self.sequence += 1
        size = len(payload)
        if self.cipher is not None and size < LARGE_FRAME:
            payload = self.cipher.applied(sequence, payload)
        elif self.cipher is not None:
            return self._encrypted_in_place(sequence, payload)
        tag = self.key.tag(sequence, payload)
        return b"".join((HEADER.pack(size + TAG_SIZE), payload, tag))

    def _encrypted_in_place(self, sequence: int, payload) -> bytearray:
        # Encrypted straight into the frame that goes out, then sealed there:
        # no second copy of a large frame.
        size = len(payload)
        data = bytearray(4 + size + TAG_SIZE)
        HEADER.pack_into(data, 0, size + TAG_SIZE)
        ciphertext = memoryview(data)[4:4 + size]
        self.cipher.apply(sequence, payload, ciphertext)
        data[4 + size:] = self.key.tag(sequence, ciphertext)
        ciphertext.release()
        return data

    def release(self, key: Sealer | None = None, cipher: Cipher | None = None) -> bool:
        """The handshake is done: write what queued (sealed now, given key;
        encrypted first, given cipher); True while some still waits."""
        if key is not None:
            held, self.pending = self.pending, bytearray()
            self.key = key
            self.cipher = cipher
            position = 0
            while position < len(held):
                size = HEADER.unpack_from(held, position)[0]
                self.pending += self._sealed(held[position + 4:position + 4 + size])
                position += 4 + size
        self.held = False
        return self.flush()


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def receive(sock: socket.socket, reader: FrameReader):
    """Frames waiting on sock (possibly none), or None once the peer is gone.
    Raises FrameTooLarge."""
    try:
        data = sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return []
    except OSError:
        return None
    if not data:
        return None
    return reader.feed(data)
