"""The log files of a node's workers, as an agent answers for ``lightray logs``.

    lightray logs ──INFO ("logs", node, request)──▶ its agent
        node is this one's ──▶ answer(...) from <session dir>/logs ──▶ INFO_REPLY
        another node's     ──(LOGS_REQUEST, id, request)──▶ that agent (mesh)
                           ◀──(LOGS_REPLY, id, answer)── ──▶ INFO_REPLY

A request is a tuple checked by ``valid_request`` wherever it arrives:

    ("list",)                            every worker log file of the node
    ("read", "worker", pid, offset)      a worker's log from byte offset
    ("read", "actor", name, offset)      the log of the worker running the named actor

An answer is a dict: {"files": [...]} for a list; {"pid", "data", "next",
"size"} for a read, data at most READ_BYTES of text (invalid UTF-8
replaced), next the offset to ask for after it; {"error": why} when the
request names nothing here. An offset past the file's end (it was rotated
since) reads from its start.
"""
from __future__ import annotations

import os
import re

from .logfile import log_dir

READ_BYTES = 256 * 1024
_FILE = re.compile(r"worker-(\d+)\.log")
_MAX_NAME = 256


def valid_request(request) -> bool:
    if type(request) is not tuple or not request:
        return False
    if request == ("list",):
        return True
    return (len(request) == 4 and request[0] == "read"
            and type(request[3]) is int and request[3] >= 0
            and ((request[1] == "worker" and type(request[2]) is int and request[2] > 0)
                 or (request[1] == "actor" and type(request[2]) is str
                     and 0 < len(request[2]) <= _MAX_NAME)))


def answer(session_dir: str, workers_by_pid: dict, actors: dict, request) -> dict:
    """The answer to a valid request from this node's files and tables."""
    directory = log_dir(session_dir)
    if request[0] == "list":
        return {"files": _list(directory, workers_by_pid)}
    _, kind, key, offset = request
    if kind == "actor":
        pid = _actor_pid(actors, key)
        if pid is None:
            return {"error": f"no actor named {key!r} runs on this node"}
    else:
        pid = key
    return _read(os.path.join(directory, f"worker-{pid}.log"), pid, offset)


def _list(directory: str, workers_by_pid: dict) -> list:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    files = []
    for name in sorted(names):
        match = _FILE.fullmatch(name)
        if match is None:
            continue
        pid = int(match.group(1))
        worker = workers_by_pid.get(pid)
        actor = worker.actor if worker is not None else None
        try:
            size = os.stat(os.path.join(directory, name)).st_size
        except FileNotFoundError:
            continue
        files.append({"pid": pid, "alive": worker is not None, "bytes": size,
                      "worker_id": worker.worker_id if worker is not None else None,
                      "actor": actor.description.get("class_name") if actor else None,
                      "actor_name": actor.description.get("name") if actor else None})
    return files


def _actor_pid(actors: dict, name: str):
    for actor in actors.values():
        worker = actor.worker
        if (actor.description.get("name") == name and worker is not None and worker.pid
                and actor.home is None):
            return worker.pid
    return None


def _read(path: str, pid: int, offset: int) -> dict:
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if offset > size:
                offset = 0   # rotated since: the new file from its start
            file.seek(offset)
            data = file.read(READ_BYTES)
    except FileNotFoundError:
        return {"error": f"no log of a worker with pid {pid} on this node"}
    # Cut at the last newline (unless one line fills the whole read), so a
    # line and a multi-byte character are never split between two reads.
    if len(data) == READ_BYTES and b"\n" in data:
        data = data[:data.rindex(b"\n") + 1]
    return {"pid": pid, "data": data.decode("utf-8", "replace"), "next": offset + len(data),
            "size": size}
