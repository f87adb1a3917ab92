"""Ids of tasks, objects, workers and nodes.

A task id is a per-process random prefix plus a counter, so a submitter makes
ids without asking anyone. Object ids are the id of the task that produces
them plus the return index, so an agent derives a task's return ids itself.
An actor's *handle object* (what keeps the actor alive while handles exist)
is "return" 0xFFFF of the actor's id.
"""
from __future__ import annotations

import itertools
import os

TASK_ID_BYTES = 14
OBJECT_ID_BYTES = 16


class IdMaker:
    """Makes unique task ids for one process (recreate it after fork)."""

    __slots__ = ("_prefix", "_counter")

    def __init__(self):
        self._prefix = os.urandom(8)
        self._counter = itertools.count(1)

    def task_id(self) -> bytes:
        return self._prefix + next(self._counter).to_bytes(6, "big")


def object_id(task_id: bytes, index: int) -> bytes:
    return task_id + index.to_bytes(2, "big")


def return_ids(task_id: bytes, num_returns: int) -> list:
    return [task_id + i.to_bytes(2, "big") for i in range(num_returns)]


def task_of(object_id_: bytes) -> bytes:
    return object_id_[:TASK_ID_BYTES]


# The handle object of an actor is "return" 0xFFFF of the actor's id: no task
# has that many returns (num_returns is checked against it).
HANDLE_SUFFIX = b"\xff\xff"
# The payload of every handle object in the agent's table (it has no value).
HANDLE_PAYLOAD = (0, b"")


def handle_object_id(actor_id: bytes) -> bytes:
    return actor_id + HANDLE_SUFFIX


def is_handle_object(object_id_: bytes) -> bool:
    return object_id_[TASK_ID_BYTES:] == HANDLE_SUFFIX


def random_hex(nbytes: int = 8) -> str:
    return os.urandom(nbytes).hex()
