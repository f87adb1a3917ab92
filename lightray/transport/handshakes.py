"""What the mesh's CURVE handshakes say: failures seen on either end, in words.

A peer refused in the handshake never reaches lightray's code (its frames are
dropped by ZeroMQ), so the only trace of it is a ZeroMQ socket monitor event.
``HandshakeWatch`` reads those events without blocking:

* on an agent's ROUTER (``for_server``): every connection refused for not
  speaking CURVE, not knowing the cluster's public key, or sending garbage
  instead of a greeting; the caller reports them through a RefusalLog, so a
  peer retrying ten times a second costs one line a minute. (A client that
  knows the public key but presents another key pair is refused by the ZAP
  check, which names the key it presented: lightray.transport.mesh.)
* on a joining agent's DEALER to the head (``for_client``): the head refused
  this agent's key, so the join can never succeed and the agent should say
  why and stop rather than retry for ever.
"""
from __future__ import annotations

import struct

import zmq

_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_EVENTS_PER_CALL = 1024       # monitor events read in one call at most
# A NO_DETAIL failure on our side is also what a head stopping mid-handshake
# looks like; one that repeats on the reconnect is the head refusing us.
_NO_DETAIL_REPEATS = 2


class HandshakeWatch:
    """The handshake events of one socket, read without blocking."""

    def __init__(self, sock: zmq.Socket, events: int):
        self.sock = sock
        self.monitor = sock.get_monitor_socket(events)
        self.monitor.setsockopt(zmq.LINGER, 0)

    @classmethod
    def for_server(cls, sock: zmq.Socket) -> "HandshakeWatch":
        # AUTH failures are the ZAP check's, which reports them itself.
        return cls(sock, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                   | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)

    @classmethod
    def for_client(cls, sock: zmq.Socket) -> "HandshakeWatch":
        return cls(sock, _FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED)

    def events(self) -> list:
        """(event, value) of the events waiting, oldest first."""
        out = []
        for _ in range(_EVENTS_PER_CALL):
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            except zmq.ZMQError:
                break
            if len(frames) == 2 and len(frames[0]) == 6:
                out.append(struct.unpack("=HI", frames[0]))
        return out

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass     # the socket is closed already
        self.monitor.close(linger=0)


def server_refusal(event: int, value: int, keyed: bool) -> tuple:
    """(key for the RefusalLog, text) for a connection an agent's ROUTER refused."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            what = ("a peer without this cluster's key (it does not speak CURVE)" if keyed
                    else "a peer using CURVE: this agent runs --insecure")
        elif value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            what = "a peer that does not know this cluster's public key"
        else:
            what = f"a peer whose handshake was malformed (ZMTP error {value:#x})"
    else:
        what = f"a peer whose handshake failed (error {value})"
    # One key for every kind: the peer's address is not known here, and one
    # client's retries fail in several ways (a reset is NO_DETAIL, say).
    return ("handshake",), f"refused a mesh connection from {what}"


class JoinRefusal:
    """Tells, from the handshake events of the connection to the head, whether
    the head refused this agent's key (a join that can never succeed)."""

    def __init__(self, watch: HandshakeWatch, head: str, keyed: bool, key_path: str | None):
        self.watch = watch
        self.head = head
        self.keyed = keyed
        self.key_path = key_path
        self.no_detail = 0

    def check(self):
        """None while nothing says the join is hopeless (and once the handshake
        succeeded: the watch is closed then); else the reason, in words."""
        if self.watch is None:
            return None
        for event, value in self.watch.events():
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.close()
                return None
            why = self._why(event, value)
            if why is not None:
                return why
        return None

    def _why(self, event: int, value: int):
        if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            # The head closed the connection on a handshake it refused before
            # our side read its reason: what it refuses depends on our side.
            self.no_detail += 1
            if self.no_detail < _NO_DETAIL_REPEATS:
                return None
            if not self.keyed:
                return self._we_are_insecure()
            return self._not_its_key() + " (or the head runs --insecure)"
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value not in (
                zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH,
                zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC):
            return (f"the handshake with the head at {self.head} failed "
                    f"(ZMTP error {value:#x}): is it a lightray agent of this version?")
        if not self.keyed:
            return self._we_are_insecure()
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return (f"the head at {self.head} runs --insecure (no key) and this agent uses "
                    f"the cluster key {self.key_path}: start both with the same key")
        return self._not_its_key()

    def _not_its_key(self) -> str:
        return (f"the head at {self.head} refused this agent's cluster key "
                f"({self.key_path or 'no file'}): it is not that cluster's key")

    def _we_are_insecure(self) -> str:
        return (f"the head at {self.head} requires its cluster key and this agent runs "
                "--insecure (give it --cluster-key FILE, a copy of the head's key)")

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None
