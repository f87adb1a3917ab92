"""The ``lightray-agent`` command: flags, then an AgentServer in the foreground."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys

import zmq

from .. import config, memory_limits
from ..discovery import agent_at, parse_addresses
from ..log import configure_process
from .cluster import control_plane
from .server import DEFAULT_PORT, AgentServer
from ..resources import detect_num_cpus
from .session import (UnsafeDirectoryError, claim_session_dir, new_session_dir,
                      reclaim_dead_sessions, write_agent_record, write_pid_file)
from ..store import shm
from ..transport.keys import (KEY_ENV, KEY_FILE, cluster_key_path, derive_stream_key,
                              find_cluster_key, lightray_home, make_cluster_key,
                              new_cluster_key, store_head_key)


def default_store_capacity(cgroup_root: str = memory_limits.CGROUP_ROOT,
                           proc_cgroup: str = memory_limits.PROC_CGROUP) -> int:
    """LIGHTRAY_OBJECT_STORE_MEMORY, else a share of the memory this process
    may use (its cgroup's limit where one is set, else RAM), capped by free /dev/shm."""
    from_env = config.object_store_memory_from_env()
    if from_env:
        return from_env
    usable = memory_limits.memory_available_to_us(cgroup_root, proc_cgroup)
    capacity = int(usable * config.OBJECT_STORE_FRACTION)
    free = shm.shm_free_bytes()
    return min(capacity, free) if free else capacity


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="lightray-agent", description="Run a lightray node agent.",
        epilog="Start a cluster with --head on one host, then --address HOST:PORT on the "
               "others; drivers attach with lightray.init(address=\"HOST:PORT\").")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--head", action="store_true",
                         help="start a cluster: this agent admits the others and "
                              "leads its control store")
    cluster.add_argument("--address", type=str, default=None,
                         help="HOST:PORT of an agent of the cluster to join, or several "
                              "(HOST:PORT,HOST:PORT,...: tried in turn, the next after 3 s "
                              "without an answer)")
    parser.add_argument("--port", type=int, default=None,
                        help=f"mesh port (head: default {DEFAULT_PORT}; others: any free port; "
                             "0: any free port)")
    parser.add_argument("--bind", type=str, default="127.0.0.1",
                        help="address the mesh listens on (default 127.0.0.1: this host only)")
    parser.add_argument("--node-ip-address", type=str, default=None,
                        help="the address peers reach this agent at (default: --bind, or "
                             "this host's address when --bind is 0.0.0.0)")
    parser.add_argument("--cluster-key", type=str, default=None,
                        help="the cluster's key file (default: $LIGHTRAY_CLUSTER_KEY; a head "
                             "without one makes one, and agents on its host find it)")
    parser.add_argument("--insecure", action="store_true",
                        help="no key, no authentication, no encryption: loopback binds only")
    parser.add_argument("--make-cluster-key", type=str, default=None, metavar="FILE",
                        help="write a new cluster key to FILE and exit")
    parser.add_argument("--control-replicas", type=str, default=None, metavar="N",
                        help="how many agents hold a replica of the control store "
                             f"(default {control_plane.DEFAULT_REPLICAS}; 1: the head "
                             "alone); the control leader (usually the head) adds them, so "
                             "give every agent the same value")
    parser.add_argument("--num-cpus", type=float, default=None)
    parser.add_argument("--num-gpus", type=float, default=0)
    parser.add_argument("--resources", type=str, default="{}", help="JSON object of custom resources")
    parser.add_argument("--object-store-memory", type=int, default=None)
    parser.add_argument("--session-dir", type=str, default=None)
    parser.add_argument("--parent-pid", type=int, default=0,
                        help="exit when this process (the embedding driver) exits")
    parser.add_argument("--spill-dir", type=str, default=None,
                        help="where objects are spilled when the store is full "
                             "(default: inside the session directory)")
    parser.add_argument("--namespace", type=str, default="default",
                        help="namespace of named actors for processes that name none")
    parser.add_argument("--ready-fd", type=int, default=-1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _cluster_options(args):
    """The mesh settings from the flags, None for a lone agent; ValueError if wrong."""
    if not args.head and not args.address:
        if (args.port is not None or args.cluster_key or args.insecure
                or args.control_replicas is not None):
            raise ValueError("--port, --cluster-key, --insecure and --control-replicas need "
                             "--head or --address HOST:PORT")
        return None
    replicas = (control_plane.replica_count(args.control_replicas)
                if args.control_replicas is not None else control_plane.DEFAULT_REPLICAS)
    head = None
    if args.address:
        head = parse_addresses(args.address, "--address")
    port = args.port if args.port is not None else (DEFAULT_PORT if args.head else 0)
    options = {"head": head, "bind": args.bind, "port": port, "cluster_key": None,
               "dead_after": config.node_dead_after(),
               "advertise": args.node_ip_address, "stream_key": None, "key_path": None,
               "generated_key": False, "control_replicas": replicas}
    if args.insecure:
        if args.bind not in _LOOPBACK:
            raise ValueError(f"--insecure is refused with --bind {args.bind}: an unauthenticated "
                             "mesh may only listen on loopback (127.0.0.1)")
        if args.cluster_key:
            raise ValueError("--insecure and --cluster-key contradict each other")
        return options
    key, path = None, None
    for address in head or [None]:     # the key a head on this host left for its address
        key, path = find_cluster_key(address, args.cluster_key)
        if key is not None:
            break
    if key is None and head is not None:
        key, path = _key_of_a_member_here(head)
    if key is None and head is not None:
        raise ValueError(f"joining {head[0]} needs the cluster's key: copy the head's "
                         f"{cluster_key_path(head[0])} here and give it with --cluster-key "
                         f"FILE or {KEY_ENV}=FILE")
    if key is None:
        key = new_cluster_key()
        options["generated_key"] = True
    options.update(cluster_key=key, stream_key=derive_stream_key(key), key_path=path)
    return options


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _key_of_a_member_here(addresses: list) -> tuple:
    """(key, path) of the key a head made (kept under LIGHTRAY_HOME, where
    agents of this host find it) that an agent running here at one of these
    addresses uses: joining through a member that is not the head finds it
    as joining through the head does. (None, None) if none does; a key file
    given to the cluster's agents by hand is never picked up this way."""
    home = os.path.join(lightray_home(), "clusters") + os.sep
    for address in addresses:
        try:
            record = agent_at(address)
        except (ConnectionError, ValueError):
            continue
        path = record.get("cluster_key_file")
        if path and os.path.abspath(path).startswith(home):
            key, path = find_cluster_key(None, path)
            if key is not None:
                return key, path
    return None, None


def main(argv=None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        configure_process("lightray-agent")   # its workers, forked, inherit it
    except ValueError as error:
        print(f"lightray-agent: {error}", file=sys.stderr)
        return 2
    if args.make_cluster_key:
        try:
            make_cluster_key(args.make_cluster_key)
        except OSError as error:
            print(f"lightray-agent: cannot write a cluster key to {args.make_cluster_key}: "
                  f"{error.strerror} (an existing key is never overwritten)", file=sys.stderr)
            return 2
        print(f"lightray-agent: wrote a new cluster key to {args.make_cluster_key}")
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN if args.parent_pid else signal.default_int_handler)
    try:
        custom = json.loads(args.resources)
        if not isinstance(custom, dict):
            raise ValueError("--resources must be a JSON object")
    except ValueError as error:
        print(f"lightray-agent: bad --resources: {error}", file=sys.stderr)
        return 2
    try:
        cluster = _cluster_options(args)
    except (ValueError, OSError) as error:
        print(f"lightray-agent: {error}", file=sys.stderr)
        return 2
    resources = dict(custom)
    resources["CPU"] = args.num_cpus if args.num_cpus is not None else detect_num_cpus()
    resources["GPU"] = args.num_gpus or 0
    try:
        if args.session_dir:
            session_dir = claim_session_dir(args.session_dir)
            session = os.path.basename(session_dir).rsplit("_", 1)[-1]
        else:
            reclaim_dead_sessions()
            session, session_dir = new_session_dir()
        write_pid_file(session_dir)
        # A lone agent (the embedded runtime's) keeps its own key in its
        # session directory, mode 0600: its stream sockets' key derives from it.
        lone_key = None
        if cluster is None:
            lone_key = make_cluster_key(os.path.join(session_dir, KEY_FILE))
    except UnsafeDirectoryError as error:
        print(f"lightray-agent: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"lightray-agent: cannot write a key into {session_dir}: {error.strerror}",
              file=sys.stderr)
        shutil.rmtree(session_dir, ignore_errors=True)
        return 2
    try:
        server = AgentServer(session_dir=session_dir, session=session, resources=resources,
                             store_capacity=args.object_store_memory or default_store_capacity(),
                             parent_pid=args.parent_pid, namespace=args.namespace,
                             spill_dir=args.spill_dir, cluster=cluster,
                             stream_key=lone_key and derive_stream_key(lone_key))
    except ValueError as error:   # a knob set to a value it does not take (lightray.config)
        print(f"lightray-agent: {error}", file=sys.stderr)
        shutil.rmtree(session_dir, ignore_errors=True)
        return 2
    except zmq.ZMQError as error:
        print(f"lightray-agent: cannot listen on {args.bind}:{cluster and cluster['port']}: "
              f"{error}", file=sys.stderr)
        shutil.rmtree(session_dir, ignore_errors=True)
        return 1
    if cluster is not None and cluster["generated_key"]:
        # Kept after the head stops, so that it may restart on the same port
        # with the same key; removed only by the user.
        cluster["key_path"] = store_head_key(server.mesh.address, cluster["cluster_key"])
    if cluster is None:
        key, key_path = lone_key, os.path.join(session_dir, KEY_FILE)
    else:
        key, key_path = cluster["cluster_key"], cluster["key_path"]
    write_agent_record(session_dir, **server.record(),
                       cluster_public=key.public.decode() if key is not None else None,
                       cluster_key_file=key_path)

    def on_term(signum, frame):
        server.running = False
    signal.signal(signal.SIGTERM, on_term)
    if not args.parent_pid:
        # SIGINT stops the agent as SIGTERM does, at the loop's next turn: a
        # KeyboardInterrupt raised wherever the agent is can land in a zmq
        # frame's destructor, which swallows it, and the agent runs on.
        signal.signal(signal.SIGINT, on_term)
    if not args.parent_pid:
        node_id = server.state.node_id
        if server.mesh is None:
            print(f"lightray agent {node_id} listening on {server.address}", flush=True)
        else:
            address = server.mesh.address
            print(f"lightray agent {node_id} listening on {address}", flush=True)
            head = address if cluster["head"] is None else ",".join(cluster["head"])
            if cluster["cluster_key"] is None:
                print("  INSECURE: no key, no authentication (loopback only)", flush=True)
                key_hint = ""
            else:
                key_hint = f" --cluster-key FILE (a copy of {cluster['key_path']})"
                print(f"  cluster key: {cluster['key_path']} (agents of this user on this host "
                      "find it; copy it, mode 0600, to other hosts)", flush=True)
            if cluster["bind"] not in _LOOPBACK:
                print(f"  exposed on {cluster['bind']}:{server.mesh.port} (reached as "
                      f"{address}); only holders of the key are admitted", flush=True)
            print(f"  join it from another host: lightray-agent --address {head}{key_hint}\n"
                  f"  attach a driver on this host: lightray.init(address=\"{address}\")",
                  flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        server.stop()
    # Refused (by the head's answer, or our key in the handshake): it was said why.
    refused = server.state.membership.refused or server.join_refused
    return 1 if refused else 0
