"""Files of a running agent are this user's only, and another user gets nowhere.

    session dir 0700; agent.sock, records, lease and actor sockets 0600
    /dev/shm segments 0600; spill dir 0700 and spill files 0600
    head: control.db (and -wal, -shm) 0600; the cluster key 0600 in a 0700 dir
    workers hold none of the agent's sockets (forked, they closed them)
    a second local user (made here with useradd, as root) cannot connect to
    agent.sock or a lease socket, open a segment, list the session directory,
    or get a pickle unpickled through the mesh port
"""
import encodings.idna  # noqa: F401  (loaded here: the other user's child cannot read it)
import glob
import os
import pickle
import pwd
import socket
import stat
import subprocess
import time

import numpy as np
import psutil
import pytest
from conftest import wait_for
from mesh_attack_utils import MakesMarker, session_dir_of, zmtp_greeting

import lightray
from lightray import NodeAffinity
from lightray.agent.session import UnsafeDirectoryError, private_dir
from lightray.ids import random_hex
from lightray.runtime import current_client_or_none
from lightray.transport import messages as m
from lightray.transport.keys import cluster_key_path
from lightray.worker.paths import actor_stream_path, lease_stream_path

MiB = 1 << 20


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@lightray.remote
def pid_of_worker():
    return os.getpid()


@lightray.remote
class Holder:
    def pid(self):
        return os.getpid()


def lease_socket() -> str:
    """The lease socket of a worker this driver leases (small tasks until it does)."""
    client = current_client_or_none()
    deadline = time.monotonic() + 10
    while not client.direct.book.leases and time.monotonic() < deadline:
        lightray.get(pid_of_worker.remote())
    lease = next(iter(client.direct.book.leases.values()))
    return lease_stream_path(client.address, lease.worker_id)


def actor_socket(actor) -> str:
    client = current_client_or_none()
    lightray.get(actor.pid.remote())
    return actor_stream_path(client.address,
                             client.actors.channels[actor._lr_actor_id].worker_id)


def segments_of(session: str) -> list:
    return [os.path.join("/dev/shm", n) for n in os.listdir("/dev/shm") if session in n]


# ------------------------------------------------------------ modes

def test_session_files_and_segments_are_private():
    lightray.init(num_cpus=1)
    try:
        ref = lightray.put(b"x" * (1 << 20))
        session_dir = lightray.api._runtime.session_dir
        assert _mode(session_dir) == 0o700
        for name in ("agent.sock", "agent.pid", "agent.json"):
            assert _mode(os.path.join(session_dir, name)) == 0o600, name
        session = lightray.api._runtime.session
        segments = segments_of(session)
        assert segments and all(_mode(path) == 0o600 for path in segments)
        del ref
    finally:
        lightray.shutdown()


def test_lease_and_actor_sockets_are_0600():
    lightray.init(num_cpus=2)
    try:
        holder = Holder.remote()
        for path in (lease_socket(), actor_socket(holder)):
            assert stat.S_ISSOCK(os.lstat(path).st_mode), path
            assert _mode(path) == 0o600, path
    finally:
        lightray.shutdown()


def test_spill_files_are_0600_in_a_0700_directory():
    lightray.init(num_cpus=1, object_store_memory=40 * MiB)
    try:
        refs = [lightray.put(np.full(MiB, i, dtype=np.int64)) for i in range(5)]  # 8 MiB each
        summary = lightray.memory_summary()
        spill_dir = summary["spill_dir"]
        assert wait_for(lambda: len(os.listdir(spill_dir)) >= 1), "nothing was spilled"
        assert _mode(spill_dir) == 0o700
        files = [os.path.join(spill_dir, n) for n in os.listdir(spill_dir)]
        assert files and all(_mode(path) == 0o600 for path in files), [
            (path, oct(_mode(path))) for path in files]
        assert int(lightray.get(refs[0])[0]) == 0      # a spilled object still reads back
    finally:
        lightray.shutdown()


def test_a_heads_control_store_and_cluster_key_are_private(own_cluster):
    head = own_cluster.add_node(head=True)
    own_cluster.add_node()
    lightray.init(address=head.address)
    own_cluster.wait_for_nodes(2)
    replica = os.path.join(session_dir_of(head), "control")    # its control replica
    database, log = os.path.join(replica, "control.db"), os.path.join(replica, "raft.db")
    assert wait_for(lambda: os.path.exists(database + "-wal") and os.path.exists(log + "-wal"))
    assert _mode(replica) == 0o700
    files = [path for path in glob.glob(os.path.join(replica, "*"))
             if not path.endswith(".tmp")]
    assert {database, database + "-wal", log, log + "-wal"} <= set(files)
    for path in files:
        assert _mode(path) == 0o600, (path, oct(_mode(path)))
    key = cluster_key_path(head.address)
    assert _mode(key) == 0o600 and _mode(os.path.dirname(key)) == 0o700


def test_a_directory_others_may_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(UnsafeDirectoryError, match="writable by other users"):
        private_dir(str(shared), "the lightray temp directory")
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(UnsafeDirectoryError, match="symbolic link"):
        private_dir(str(link), "the lightray temp directory")


# ------------------------------------------------- inherited sockets

def socket_inodes(pid: int) -> set:
    """Inodes of the sockets pid has open (/proc/PID/fd -> socket:[N])."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    return inodes


def listening_inodes() -> set:
    """Inodes of every listening TCP and Unix stream socket on this host."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A":                       # TCP_LISTEN
                inodes.add(int(fields[9]))
    with open("/proc/net/unix") as f:
        for row in f.read().splitlines()[1:]:
            fields = row.split()
            if int(fields[3], 16) & 0x10000:            # __SO_ACCEPTCON: listening
                inodes.add(int(fields[6]))
    return inodes


def test_workers_hold_none_of_their_agents_sockets(own_cluster):
    head = own_cluster.add_node(head=True, num_cpus=2)
    own_cluster.add_node()
    lightray.init(address=head.address)
    own_cluster.wait_for_nodes(2)
    on_head = NodeAffinity(head.node_id)
    holder = Holder.options(scheduling_strategy=on_head).remote()
    workers = {lightray.get(holder.pid.remote())}
    workers |= set(lightray.get([pid_of_worker.options(scheduling_strategy=on_head).remote()
                                 for _ in range(4)]))
    agent_sockets = socket_inodes(head.pid)
    agent_listening = agent_sockets & listening_inodes()
    # The mesh port and agent.sock at least.
    assert len(agent_listening) >= 2, (agent_sockets, listening_inodes())
    print(f"\nagent {head.pid}: {len(agent_sockets)} sockets, listening {agent_listening}; "
          f"workers {sorted(workers)}")
    for pid in workers:
        assert psutil.Process(pid).ppid() == head.pid
        held = socket_inodes(pid)
        assert not held & agent_listening, f"worker {pid} holds a listening socket"
        assert not held & agent_sockets, f"worker {pid} shares sockets with its agent"


# ------------------------------------------------- a second local user

def other_user():
    """A fresh local user's name (removed by the caller with userdel -r)."""
    if os.geteuid() != 0:
        pytest.skip("creating a second local user needs root")
    if subprocess.run(["which", "useradd"], capture_output=True).returncode != 0:
        pytest.skip("no useradd on this host")
    name = f"lr{random_hex(4)}"
    made = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"useradd failed: {made.stderr.strip()}")
    return name


def as_user(name: str, attempts) -> list:
    """Run attempts() in a child forked as that user (no lightray in it, no
    ZeroMQ: plain sockets and files); the lines it returns."""
    user = pwd.getpwnam(name)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.write(write_end, "\n".join(attempts()).encode())
        except BaseException as error:   # noqa: B036 (the child must leave by _exit)
            os.write(write_end, f"child failed: {error!r}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return text.splitlines()


def _outcome(action) -> str:
    try:
        action()
    except PermissionError:
        return "denied"
    except OSError as error:
        return f"error {error.errno}"
    return "allowed"


def _connect_unix(path: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    finally:
        sock.close()


def _mesh_attack(address: str, hostile: bytes) -> str:
    """A pickle to the mesh port, with no greeting and after a NULL one; what
    the head did: "hung up" (read nothing more) or what it sent."""
    host, _, port = address.rpartition(":")
    said = b""
    for opening in (b"", zmtp_greeting("NULL")):
        sock = socket.create_connection((host, int(port)), 5)
        sock.settimeout(5)
        try:
            sock.sendall(opening + hostile)
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                said += chunk
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            pass
        finally:
            sock.close()
    return "hung up" if len(said) <= 64 else f"sent {len(said)} bytes"   # its greeting at most



@pytest.mark.timeout(120)
def test_a_second_local_user_gets_no_socket_segment_directory_or_pickle(own_cluster,
                                                                        tmp_path):
    """The embedded runtime's files (its driver leases workers) and a head's
    mesh port and ipc socket."""
    name = other_user()
    try:
        head = own_cluster.add_node(head=True)
        lightray.init(num_cpus=2)
        big = lightray.put(np.zeros(MiB, dtype=np.int64))          # in a segment
        session_dir = lightray.api._runtime.session_dir
        lease, actor = lease_socket(), actor_socket(Holder.remote())
        segment = segments_of(lightray.api._runtime.session)[0]
        sockets = {"agent.sock": os.path.join(session_dir, "agent.sock"), "lease": lease,
                   "actor": actor,
                   "head's agent.sock": os.path.join(session_dir_of(head), "agent.sock")}
        marker = str(tmp_path / "marker")     # the agent (root) could make it, if it unpickled
        hostile = m.encode([(m.JOIN, MakesMarker(marker))]) + pickle.dumps(MakesMarker(marker))

        def attempts():
            return [f"{what} " + _outcome(lambda: _connect_unix(path))
                    for what, path in sockets.items()] + [
                "segment " + _outcome(lambda: os.close(os.open(segment, os.O_RDONLY))),
                "session dir " + _outcome(lambda: os.listdir(session_dir)),
                "mesh " + _mesh_attack(head.address, hostile)]
        outcomes = as_user(name, attempts)
        print(f"\nas {name}: {outcomes}")
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)
    assert outcomes == [f"{what} denied" for what in sockets] + [
        "segment denied", "session dir denied", "mesh hung up"], outcomes
    assert not os.path.exists(marker)
    assert int(lightray.get(big)[0]) == 0
    assert lightray.get(pid_of_worker.remote()) > 0
    assert head.process.poll() is None
