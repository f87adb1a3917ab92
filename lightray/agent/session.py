"""A session on disk: its directory, the records other processes read, and
reclaiming what a dead agent left behind.

    <temp dir>/session_<time>_<pid>_<id>/   mode 0700, one per agent
        agent.pid     the agent's pid (a dead pid: the session can be reclaimed)
        agent.json    how to reach it: node id, ipc and mesh addresses, head, segment prefix
        spill_dir     where its spill files go
    <temp dir>/current_cluster               the mesh address of the head started last here
"""
from __future__ import annotations

import json
import os
import shutil
import time

from .. import config
from ..store.shm import shm_prefix
from ..ids import random_hex
from ..store import shm

_SPILL_DIR_RECORD = "spill_dir"   # in the session directory: where its spill files go


def prepare_spill_dir(session_dir: str, session: str, spill_dir: str | None) -> str:
    """This session's spill folder: <spill_dir>/lightray-spill-<session>, or
    "spill" in the session directory. Recorded there, so that an agent
    starting after a crash can remove it."""
    spill_dir = spill_dir or config.spill_dir_from_env()
    if spill_dir:
        path = os.path.join(os.path.abspath(spill_dir), f"lightray-spill-{session}")
    else:
        path = os.path.join(session_dir, "spill")
    os.makedirs(path, mode=0o700, exist_ok=True)
    with open(os.path.join(session_dir, _SPILL_DIR_RECORD), "w") as f:
        f.write(path)
    return path


def new_session_dir() -> tuple:
    """(session id, directory) of a fresh session, mode 0700."""
    root = config.temp_dir()
    os.makedirs(root, exist_ok=True)
    session = random_hex(4)
    path = os.path.join(root, f"session_{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}_{session}")
    os.makedirs(path, mode=0o700)
    return session, path


def reclaim_dead_sessions() -> None:
    """Remove segments and directories of sessions whose agent is gone."""
    root = config.temp_dir()
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(root, name)
        pid_file = os.path.join(path, "agent.pid")
        try:
            with open(pid_file) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if pid_alive(pid):
            continue
        session = name.rsplit("_", 1)[-1]
        try:   # the prefix the dead agent used (its environment may differ from ours)
            with open(os.path.join(path, AGENT_RECORD)) as f:
                prefix = json.load(f)["segment_prefix"]
        except (OSError, ValueError, KeyError):
            prefix = shm_prefix(session)
        if prefix:
            shm.unlink_all(prefix)
        try:
            with open(os.path.join(path, _SPILL_DIR_RECORD)) as f:
                shutil.rmtree(f.read().strip(), ignore_errors=True)
        except OSError:
            pass
        shutil.rmtree(path, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """True if pid runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # "pid (comm) state ...": comm may hold spaces and parentheses.
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


AGENT_RECORD = "agent.json"          # in the session directory: how to reach this agent
CURRENT_CLUSTER = "current_cluster"  # in the temp directory: the last head started here


def forget_current_cluster(address: str) -> None:
    current = os.path.join(config.temp_dir(), CURRENT_CLUSTER)
    try:
        with open(current) as f:
            if f.read().strip() == address:
                os.unlink(current)
    except OSError:
        pass


def write_agent_record(session_dir: str, *, node_id: str, ipc: str, mesh_address: str | None,
                       is_head: bool, segment_prefix: str) -> None:
    """The record other processes read to find this agent (and, for a head,
    the host's current cluster)."""
    record = {"node_id": node_id, "pid": os.getpid(), "ipc": ipc, "address": mesh_address,
              "head": is_head, "segment_prefix": segment_prefix}
    path = os.path.join(session_dir, AGENT_RECORD)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)
    if is_head:
        current = os.path.join(config.temp_dir(), CURRENT_CLUSTER)
        with open(current + ".tmp", "w") as f:
            f.write(mesh_address)
        os.replace(current + ".tmp", current)
