"""A session on disk: its directory, the records other processes read, and
reclaiming what a dead agent left behind.

    <temp dir>/                              mode 0700, this user's (default /tmp/lightray-<uid>)
        session_<time>_<pid>_<id>/           mode 0700, one per agent
            agent.pid     the agent's pid (a dead pid: the session can be reclaimed)   0600
            agent.json    how to reach it: node id, ipc and mesh addresses, head, ...  0600
            agent.sock    the agent's ZeroMQ ipc socket                               0600
            spill_dir     where its spill files go                                    0600
        current_cluster   the mesh address of the head started last here             0600

On a shared host another user could create the temp directory first (or a
symlink in its place) and read or plant what the agents write there, so
every directory lightray writes into is checked before use: a real directory
(not a symlink), owned by this user, writable by nobody else
(``private_dir``); files are created 0600 whatever the umask says.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
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
    private_dir(path, "the spill directory")
    write_private_file(os.path.join(session_dir, _SPILL_DIR_RECORD), path)
    return path


class UnsafeDirectoryError(PermissionError):
    """A directory lightray would write into could be read or changed by another user."""


def private_dir(path: str, what: str, *, create: bool = True) -> str:
    """path as a directory only this user can enter: created 0700 if missing
    (its parents too), else checked. Raises UnsafeDirectoryError for a
    symlink, a non-directory, another user's directory, or one that others
    may write into; one merely readable by others is narrowed to 0700."""
    if create:
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    info = os.lstat(path)
    problem = None
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory"
    elif info.st_uid != os.geteuid():
        problem = f"belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})"
    elif info.st_mode & 0o022:
        problem = f"is writable by other users (mode {stat.S_IMODE(info.st_mode):04o})"
    if problem:
        raise UnsafeDirectoryError(
            f"{what} {path} {problem}: another user could read or replace lightray's "
            f"sockets and files there; remove it, or choose another with "
            f"{config.TEMP_DIR_ENV}")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def temp_root(create: bool = True) -> str | None:
    """The checked temp directory (config.temp_dir); None if it does not
    exist and create is False."""
    root = config.temp_dir()
    if not create and not os.path.lexists(root):
        return None
    return private_dir(root, "the lightray temp directory", create=create)


def write_private_file(path: str, text: str) -> None:
    """Replace path's content by text, atomically, in a file of mode 0600."""
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)      # the umask only ever removes bits; be explicit anyway
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(temporary, path)


def new_session_dir() -> tuple:
    """(session id, directory) of a fresh session, mode 0700."""
    root = temp_root()
    session = random_hex(4)
    path = os.path.join(root, f"session_{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}_{session}")
    os.mkdir(path, 0o700)
    os.chmod(path, 0o700)
    return session, path


def claim_session_dir(path: str) -> str:
    """A session directory given on the command line: this user's, 0700."""
    return private_dir(path, "the session directory")


def write_pid_file(session_dir: str) -> None:
    write_private_file(os.path.join(session_dir, "agent.pid"), str(os.getpid()))


def reclaim_dead_sessions() -> None:
    """Remove segments and directories of sessions whose agent is gone."""
    root = temp_root(create=False)
    if root is None:
        return
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
                       is_head: bool, segment_prefix: str, cluster_public: str | None = None,
                       cluster_key_file: str | None = None) -> None:
    """The record other processes read to find this agent (and, for a head,
    the host's current cluster). cluster_public: the z85 public key of its
    cluster key (None: --insecure), which a driver given a key checks its
    key against (lightray.discovery.check_cluster_key); cluster_key_file:
    where that key is kept on this host."""
    record = {"node_id": node_id, "pid": os.getpid(), "ipc": ipc, "address": mesh_address,
              "head": is_head, "segment_prefix": segment_prefix,
              "cluster_public": cluster_public, "cluster_key_file": cluster_key_file}
    write_private_file(os.path.join(session_dir, AGENT_RECORD), json.dumps(record))
    if is_head:
        write_private_file(os.path.join(temp_root(), CURRENT_CLUSTER), mesh_address)
