"""Is a peer's process gone? What the mesh DEALERs' reconnects say.

    Mesh DEALER to peer P ──zmq socket monitor──▶ PeerWatch(P).poll(now)
        CONNECTED / HANDSHAKE_SUCCEEDED   P accepts us: up
        DISCONNECTED, CONNECT_RETRIED     the connection broke / a reconnect failed
    RefusalClock: down since the first failure after the last CONNECTED; gone
        once a reconnect still fails REFUSED_FOR seconds later

A SIGKILLed (or crashed) agent's port is closed by the kernel at once: the
established connection breaks and every reconnect (ZeroMQ retries every
100 ms) is refused, so its peers know within about REFUSED_FOR s instead of
waiting for its heartbeats to stop for LIGHTRAY_NODE_DEAD_AFTER_S. A
SIGSTOPped agent still accepts TCP (the kernel answers for it): nothing is
refused and only silence tells (lightray.agent.cluster.node_table).

``RefusalClock`` is the rule, fed (event, time) without sockets; ``PeerWatch``
reads one socket's monitor without blocking and feeds it.
"""
from __future__ import annotations

import itertools
import struct

import zmq

REFUSED_FOR = 1.0      # seconds of refused reconnects, with no success between: gone
_UP = zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
_DOWN = zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
_EVENTS_PER_POLL = 256
# A socket's earlier monitor (the join's handshake watch) frees its inproc
# address only once ZeroMQ's reaper closed it: every watch gets its own.
_ADDRESSES = itertools.count()


class RefusalClock:
    """When a peer's connection went down and whether it has stayed down."""
    __slots__ = ("down_since", "gone")

    def __init__(self):
        self.down_since = None     # time of the first failure since it was last up
        self.gone = False          # refused for REFUSED_FOR s: the process is gone

    def event(self, event: int, now: float) -> bool:
        """Feed one monitor event; True the first time the peer counts as gone."""
        if event & _UP:
            self.down_since = None
            return False
        if not event & _DOWN or self.gone:
            return False
        if self.down_since is None:
            self.down_since = now
            return False
        if event == zmq.EVENT_CONNECT_RETRIED and now - self.down_since >= REFUSED_FOR:
            self.gone = True
            return True
        return False


class PeerWatch:
    """The monitor of one mesh DEALER (a socket has at most one monitor)."""
    __slots__ = ("sock", "monitor", "clock")

    def __init__(self, sock: zmq.Socket):
        self.sock = sock
        self.monitor = sock.get_monitor_socket(
            _UP | _DOWN, addr=f"inproc://lightray-peer-watch-{next(_ADDRESSES)}")
        self.monitor.setsockopt(zmq.LINGER, 0)
        self.clock = RefusalClock()

    def poll(self, now: float) -> bool:
        """Read the events waiting; True the first time the peer counts as gone."""
        gone = False
        for _ in range(_EVENTS_PER_POLL):
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:    # zmq.Again: nothing more; others: the socket closed
                break
            if len(frames) == 2 and len(frames[0]) == 6:
                event, _ = struct.unpack("=HI", frames[0])
                gone = self.clock.event(event, now) or gone
        return gone

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass      # the socket is closed already
        self.monitor.close(linger=0)
