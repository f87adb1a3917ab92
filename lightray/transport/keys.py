"""Cluster keys: the file format, where a cluster's key lives, and what is derived from it.

A cluster key file holds three lines: the z85 CURVE public key, the z85 CURVE
secret key (one pair, shared by every agent of the cluster), and a 32-byte
secret in hex from which the stream sockets' key is derived. The file is
mode 0600 inside a 0700 directory.

A head that is given no key makes one and keeps it at
``$LIGHTRAY_HOME/clusters/<host>-<port>/cluster.key`` (LIGHTRAY_HOME defaults
to ~/.lightray), where agents and drivers of the same user on the same host
find it from the head's address alone.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from typing import NamedTuple

import zmq

HOME_ENV = "LIGHTRAY_HOME"
KEY_ENV = "LIGHTRAY_CLUSTER_KEY"
KEY_FILE = "cluster.key"
_STREAM_LABEL = b"lightray stream key v1"


class ClusterKey(NamedTuple):
    public: bytes      # z85 CURVE public key (40 bytes)
    secret: bytes      # z85 CURVE secret key (40 bytes)
    shared: bytes      # 32 random bytes


def new_cluster_key() -> ClusterKey:
    public, secret = zmq.curve_keypair()
    return ClusterKey(public, secret, os.urandom(32))


def write_cluster_key(path: str, key: ClusterKey) -> None:
    """Write key to path (mode 0600; never overwrites an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{key.public.decode()}\n{key.secret.decode()}\n{key.shared.hex()}\n")


def make_cluster_key(path: str) -> ClusterKey:
    """Write a new cluster key to path, mode 0600."""
    key = new_cluster_key()
    write_cluster_key(path, key)
    return key


def read_cluster_key(path: str) -> ClusterKey:
    """The key in a key file; ValueError naming the file and the problem."""
    try:
        with open(path) as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError as error:
        raise ValueError(f"cannot read the cluster key file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        lines = []
    problem = None
    if len(lines) != 3 or any(len(line) != 40 for line in lines[:2]) or len(lines[2]) != 64:
        problem = "it does not hold two lines of 40 characters and one of 64 hex digits"
    else:
        public, secret = lines[0].encode(), lines[1].encode()
        try:
            shared = bytes.fromhex(lines[2])
            if zmq.curve_public(secret) != public:
                problem = "its first line is not the public key of its second"
        except ValueError:
            problem = "its third line is not hex"
        except zmq.ZMQError:
            problem = "its lines are not z85-encoded keys"
    if problem:
        raise ValueError(f"{path} is not a lightray cluster key: {problem} (make one with "
                         "lightray-agent --make-cluster-key FILE)")
    return ClusterKey(public, secret, shared)


def derive_stream_key(key: ClusterKey) -> bytes:
    """The 32-byte key of the stream sockets' handshake, derived from the cluster key."""
    return hmac.new(key.shared, _STREAM_LABEL, hashlib.sha256).digest()


def lightray_home() -> str:
    return os.environ.get(HOME_ENV) or os.path.join(os.path.expanduser("~"), ".lightray")


def cluster_key_path(address: str) -> str:
    """Where the key of the cluster whose head is at HOST:PORT is kept on this host."""
    host, _, port = address.rpartition(":")
    if host in ("localhost", "0.0.0.0", ""):
        host = "127.0.0.1"
    return os.path.join(lightray_home(), "clusters", f"{host}-{port}", KEY_FILE)


def store_head_key(address: str, key: ClusterKey) -> str:
    """Keep a head's generated key where same-host agents find it; its path."""
    path = cluster_key_path(address)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    for directory in (os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        os.chmod(directory, 0o700)
    if os.path.exists(path):
        os.unlink(path)   # a stale key of an earlier head on this port
    write_cluster_key(path, key)
    return path


def find_cluster_key(address: str | None, given: str | None = None):
    """(key, path) from a file given, LIGHTRAY_CLUSTER_KEY, or the head's key on
    this host; (None, None) when there is none. ValueError if a file is bad."""
    path = given or os.environ.get(KEY_ENV) or None
    from_env = path is not None and not given
    if path is None and address:
        candidate = cluster_key_path(address)
        if os.path.exists(candidate):
            path = candidate
    if path is None:
        return None, None
    try:
        return read_cluster_key(path), os.path.abspath(path)
    except ValueError as error:
        if from_env:
            raise ValueError(f"{error} (the file named by {KEY_ENV})") from None
        raise
