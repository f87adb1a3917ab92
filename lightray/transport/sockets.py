"""ZeroMQ socket construction with lightray's settings.

High-water marks are off: lightray never drops a message, and back-pressure
belongs to the scheduler (it only sends what workers can take). Linger is 0
so closing never waits on a dead peer. Frames are capped
(ZMQ_MAXMSGSIZE, lightray.config.max_message_bytes): a larger one closes the
sender's connection before it is held in memory, so one frame cannot
exhaust the receiver's memory.
"""
from __future__ import annotations

import os

import zmq

from .. import config


def _tune(socket: zmq.Socket) -> zmq.Socket:
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SNDHWM, 0)
    socket.setsockopt(zmq.RCVHWM, 0)
    socket.setsockopt(zmq.RECONNECT_IVL, 20)
    socket.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes())
    return socket


def router(context: zmq.Context, address: str) -> zmq.Socket:
    socket = _tune(context.socket(zmq.ROUTER))
    socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
    socket.bind(address)
    return socket


def private_router(context: zmq.Context, address: str) -> zmq.Socket:
    """A ROUTER bound on ipc://PATH whose socket file is 0600: only this user
    may connect. The umask is narrowed around the bind (the file is created
    by it, with the umask's mode) and the mode then set explicitly."""
    path = address[len("ipc://"):]
    previous = os.umask(0o177)
    try:
        socket = router(context, address)
    finally:
        os.umask(previous)
    os.chmod(path, 0o600)
    return socket


def dealer(context: zmq.Context, address: str, identity: bytes) -> zmq.Socket:
    socket = _tune(context.socket(zmq.DEALER))
    socket.setsockopt(zmq.IDENTITY, identity)
    socket.connect(address)
    return socket


def ipc_address(session_dir: str, name: str = "agent.sock") -> str:
    return f"ipc://{session_dir}/{name}"
