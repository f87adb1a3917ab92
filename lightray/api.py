"""The driver-facing API: init, shutdown, get, put, wait, cancel, remote.

``init(address="HOST:PORT")`` attaches this process to the agent of a
cluster running on this host at that mesh address (``lightray-agent`` prints
it; ``"auto"`` finds it, ``"ipc://..."`` names its socket,
``"HOST:PORT,HOST:PORT"`` takes the first that runs); shutdown() then
only detaches. Should that agent die, the next call re-attaches through
another live agent of the same cluster on this host (refs and handles of the
old attachment raise RuntimeNotRunningError; new work runs). It needs no key on the agent's host (the agent's socket admits
only its own user); a key given (``cluster_key=FILE`` or
LIGHTRAY_CLUSTER_KEY) must be the cluster's, or init fails at once saying
where the right one is (lightray.discovery.check_cluster_key).

``init()`` with no address starts an embedded runtime: a node agent process
(``python -m lightray.agent``, a child of this process in its own session so a
terminal's Ctrl-C reaches only the driver) which forks the worker pool. The
agent watches this process and cleans everything up when it exits, even by
SIGKILL. The embedded agent makes its own key, in its session directory.
"""
from __future__ import annotations

import atexit
import collections.abc
import json
import os
import subprocess
import sys
import threading

from . import exceptions, log, runtime, serialization, task_warnings
from . import runtime_env as runtime_envs
from .actor import ActorClass, ActorHandle
from .config import local_mode_from_env
from .agent.session import new_session_dir, pid_alive, reclaim_dead_sessions
from .client import core as client_module
from .config import ADDRESS_ENV, JOB_RUNTIME_ENV_ENV, LOG_LEVEL_ENV
from .discovery import (agent_at, auto_agent, check_cluster_key, cluster_agent,
                        first_agent_at, parse_addresses)
from .ids import handle_object_id
from .local.client import LocalClient
from .log import get_logger
from .object_ref import ObjectRef
from .output import printer as output_printer
from .remote_function import RemoteFunction
from .resources import detect_num_cpus, make_request
from .runtime import current_client_or_none, require_client_for, set_current_client
from .runtime_context import get_runtime_context, state as runtime_state
from .transport import messages, sockets

_INIT_OPTIONS = ("address", "num_cpus", "num_gpus", "resources", "object_store_memory",
                 "spill_dir", "namespace", "cluster_key", "logging_level", "runtime_env",
                 "ignore_reinit_error", "local_mode", "copy_values", "forward_warnings",
                 "log_to_driver", "include_dashboard", "dashboard_port")

_lock = threading.RLock()
_runtime = None
_log_to_driver = True   # init(log_to_driver=...): tasks' printed lines shown here


class _Runtime:
    __slots__ = ("client", "process", "session_dir", "session", "namespace", "cluster",
                 "dashboard")

    def __init__(self, client, process, session_dir, session, namespace, cluster=None):
        self.client = client
        self.process = process
        self.session_dir = session_dir
        self.session = session
        self.namespace = namespace
        # Attached to a cluster's agent: (its cluster's public key, the members'
        # mesh addresses when attached), to find another agent should it die.
        self.cluster = cluster
        self.dashboard = None    # the DashboardServer of init(include_dashboard=True)


def init(address: str | None = None, *, num_cpus=None, num_gpus=None, resources=None,
         object_store_memory=None, spill_dir=None, namespace=None, cluster_key=None,
         logging_level=None, runtime_env=None, ignore_reinit_error: bool = False,
         local_mode=None, copy_values=None, forward_warnings: bool = True,
         log_to_driver: bool = True, include_dashboard: bool = False, dashboard_port=None,
         **unknown):
    """Start an embedded runtime, or attach to a running agent, and attach this process.

    object_store_memory: the store's capacity in bytes (default 30% of the
    memory this process may use: its cgroup's limit where one is set, else
    RAM; at most the free space of /dev/shm); spill_dir: where objects beyond it
    go (default: inside the session directory; env LIGHTRAY_SPILL_DIR).
    cluster_key: with address, the cluster's key file to check the agent
    against (default: LIGHTRAY_CLUSTER_KEY; neither: no check is needed).
    logging_level: of the "lightray" loggers (lightray.log), here and in the
    agent init starts (default: LIGHTRAY_LOG_LEVEL, else WARNING).
    runtime_env: the runtime environment of every task and actor this
    driver submits (lightray.runtime_env; theirs is merged over it).
    local_mode=True (default: env LIGHTRAY_LOCAL_MODE): everything runs in
    this process (lightray.local); copy_values=False there hands tasks the
    very objects given instead of copies.
    forward_warnings: re-emit here the warnings raised in a task or actor
    method when its result is read (lightray/task_warnings.py); False drops them.
    log_to_driver: print here, prefixed "(name pid=.. node=..)", what tasks
    and actor methods this driver submits (and their nested tasks) print, from
    any node (lightray.output); False: only the workers' log files keep it.
    include_dashboard=True: serve the dashboard (lightray.dashboard) from this
    process on 127.0.0.1, at dashboard_port (default: LIGHTRAY_DASHBOARD_PORT,
    else 8265, else any free port; 0: any); its URL is logged (INFO, the
    "lightray.dashboard" logger) and is get_runtime_context().dashboard_url.
    """
    global _runtime, _log_to_driver
    if unknown:
        raise ValueError(f"unknown init() option(s) {', '.join(map(repr, sorted(unknown)))}; "
                         f"valid options are: {', '.join(_INIT_OPTIONS)}")
    if runtime_env is None and os.environ.get(JOB_RUNTIME_ENV_ENV):   # a job's driver
        runtime_env = json.loads(os.environ[JOB_RUNTIME_ENV_ENV])
    job_env = runtime_envs.parse(runtime_env, "init(runtime_env=...)")
    if address is None and local_mode is not True and os.environ.get(ADDRESS_ENV):
        address = os.environ[ADDRESS_ENV]   # attach as Ray's init() does (a job's driver)
    if logging_level is not None:
        logging_level = log.configure_driver(logging_level)
    elif os.environ.get(LOG_LEVEL_ENV):
        logging_level = log.configure_driver(log.level_from_env())
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, got {type(namespace).__name__}: {namespace!r}")
    if namespace == "":
        raise ValueError("namespace must be a non-empty str, got ''")
    if not isinstance(include_dashboard, bool):
        raise TypeError(f"include_dashboard must be True or False, got {include_dashboard!r}")
    if dashboard_port is not None and not include_dashboard:
        raise ValueError("dashboard_port is the port of init(include_dashboard=True)")
    with _lock:
        if is_initialized():
            if ignore_reinit_error:
                return _context()
            raise RuntimeError("lightray.init() was called twice; call lightray.shutdown() first "
                               "or pass ignore_reinit_error=True")
        if not isinstance(forward_warnings, bool):
            raise TypeError(f"forward_warnings must be True or False, got {forward_warnings!r}")
        if not isinstance(log_to_driver, bool):
            raise TypeError(f"log_to_driver must be True or False, got {log_to_driver!r}")
        _log_to_driver = log_to_driver
        if local_mode is None:
            local_mode = local_mode_from_env()
        if _check_local_mode(local_mode, copy_values, address=address, cluster_key=cluster_key,
                             object_store_memory=object_store_memory, spill_dir=spill_dir,
                             runtime_env=runtime_env):
            if include_dashboard:
                raise ValueError("include_dashboard=True cannot be used with local_mode=True: "
                                 "local mode records no task events for the dashboard to show")
            if not forward_warnings:
                raise ValueError("forward_warnings=False cannot be used with local_mode=True: "
                                 "tasks run in this process, their warnings show here directly")
            if not log_to_driver:
                raise ValueError("log_to_driver=False cannot be used with local_mode=True: "
                                 "tasks run in this process, what they print shows here "
                                 "directly")
            request = make_request(num_cpus if num_cpus is not None else detect_num_cpus(),
                                   num_gpus, resources)
            _runtime = _start_local(request, namespace, copy_values is not False)
            return _with_dashboard(include_dashboard, dashboard_port)
        task_warnings.set_forwarding(forward_warnings)
        if address is not None:
            if not isinstance(address, str):
                raise TypeError(f"address must be a str, got {type(address).__name__}")
            if any(v is not None for v in (num_cpus, num_gpus, resources, object_store_memory,
                                           spill_dir)):
                raise ValueError("num_cpus, num_gpus, resources, object_store_memory and "
                                 "spill_dir belong to the agent; init(address=...) attaches to "
                                 "a running one")
            if cluster_key is not None and not isinstance(cluster_key, (str, os.PathLike)):
                raise TypeError(f"cluster_key must be a path, got {cluster_key!r}")
            _runtime = _connect_local(address, namespace, cluster_key and os.fspath(cluster_key))
            runtime_envs.set_job_env(job_env)
            return _with_dashboard(include_dashboard, dashboard_port)
        if cluster_key is not None:
            raise ValueError("cluster_key names the key of a running cluster, for "
                             "init(address=...); init() without an address makes its own key")
        request = make_request(num_cpus if num_cpus is not None else detect_num_cpus(),
                               num_gpus, resources)
        if num_gpus is not None and num_gpus != int(num_gpus):
            raise ValueError(f"init(num_gpus=...) must be a whole number, got {num_gpus!r}")
        if object_store_memory is not None and (
                isinstance(object_store_memory, bool) or not isinstance(object_store_memory, int)
                or object_store_memory <= 0):
            raise ValueError(f"object_store_memory must be a positive int (bytes), "
                             f"got {object_store_memory!r}")
        if spill_dir is not None:
            if not isinstance(spill_dir, (str, os.PathLike)) or not str(spill_dir):
                raise TypeError(f"spill_dir must be a path, got {spill_dir!r}")
            spill_dir = os.path.abspath(spill_dir)
            if os.path.exists(spill_dir) and not os.path.isdir(spill_dir):
                raise ValueError(f"spill_dir {spill_dir!r} exists and is not a directory")
        _runtime = _start_embedded(request, object_store_memory, namespace, spill_dir,
                                   logging_level)
        runtime_envs.set_job_env(job_env)
        return _with_dashboard(include_dashboard, dashboard_port)


def _with_dashboard(include_dashboard: bool, port):
    """init's return, once the dashboard it asked for serves (if it fails to,
    the runtime just started is shut down and the error raised)."""
    if include_dashboard:
        # Imported here: the dashboard reads lightray through this module.
        from .dashboard import server as dashboard_server
        try:
            _runtime.dashboard = dashboard_server.start("127.0.0.1", port)
        except BaseException:
            shutdown()
            raise
        runtime_state.dashboard_url = _runtime.dashboard.url
        get_logger("dashboard").info("dashboard at %s", _runtime.dashboard.url)
    return _context()


def _check_local_mode(local_mode, copy_values, **cluster_only) -> bool:
    """Whether init runs in local mode; a clear error for options that need the other mode."""
    if not isinstance(local_mode, bool):
        raise TypeError(f"local_mode must be a bool, got {local_mode!r}")
    if copy_values is not None and not isinstance(copy_values, bool):
        raise TypeError(f"copy_values must be a bool, got {copy_values!r}")
    if not local_mode:
        if copy_values is not None:
            raise ValueError("copy_values is an option of local mode: "
                             "init(local_mode=True, copy_values=False)")
        return False
    given = sorted(name for name, value in cluster_only.items() if value is not None)
    if given:
        raise ValueError(f"{', '.join(given)} cannot be used with local_mode=True: local mode "
                         "has no agent and no object store (everything runs in this process)")
    return True


def _start_local(request: dict, namespace, copy_values: bool) -> _Runtime:
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise ValueError(f"namespace must be a non-empty str, got {namespace!r}")
    client = LocalClient(request, namespace, copy_values)
    set_current_client(client, namespace)
    return _Runtime(client, None, None, None, namespace)


def _start_embedded(request: dict, object_store_memory, namespace, spill_dir=None,
                    logging_level=None) -> _Runtime:
    reclaim_dead_sessions()
    session, session_dir = new_session_dir()
    custom = {k: v for k, v in request.items() if k not in ("CPU", "GPU")}
    command = [sys.executable, "-m", "lightray.agent", "--session-dir", session_dir,
               "--parent-pid", str(os.getpid()), "--num-cpus", str(request.get("CPU", 0)),
               "--num-gpus", str(int(request.get("GPU", 0))), "--resources", json.dumps(custom)]
    if object_store_memory:
        command += ["--object-store-memory", str(object_store_memory)]
    if namespace:
        command += ["--namespace", namespace]
    if spill_dir:
        command += ["--spill-dir", spill_dir]
    env = dict(os.environ)
    # Workers import user modules by name (functions pickled by reference):
    # give them the driver's import path.
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) if p else os.getcwd() for p in sys.path)
    if logging_level is not None:
        env[LOG_LEVEL_ENV] = str(logging_level)
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=env,
                               start_new_session=True, close_fds=True)
    try:
        client = client_module.CoreClient(sockets.ipc_address(session_dir), kind="driver",
                                          agent_alive=lambda: process.poll() is None)
    except BaseException:
        process.kill()
        process.wait()
        raise
    set_current_client(client, namespace)
    return _Runtime(client, process, session_dir, session, namespace)


def _connect_local(address: str, namespace, cluster_key: str | None = None) -> _Runtime:
    """Attach to an agent on this host: the HOST:PORT its mesh listens on (or
    several, comma-separated: the first that runs), ipc://<session
    dir>/agent.sock, or "auto" (lightray.discovery)."""
    if address.startswith("lightray://"):
        raise ValueError(
            f"init(address={address!r}): a driver on a host without an agent (lightray://) "
            "is not supported by this lightray; on this host, start an agent that joins the "
            "cluster (lightray-agent --address HOST:PORT --cluster-key FILE) and attach to it "
            "with init(address=\"auto\"), or run the program on the cluster with "
            "lightray job submit --address HOST:PORT -- python script.py")
    if address == "auto":
        record = auto_agent()
    elif address.startswith("ipc://"):
        record = agent_at(address)
    else:
        record = first_agent_at(parse_addresses(address))
    check_cluster_key(record, cluster_key)
    return _attach(record, namespace)


def _attach(record: dict, namespace) -> _Runtime:
    agent_pid = record["pid"]
    session = os.path.basename(record["session_dir"]).rsplit("_", 1)[-1]
    client = client_module.CoreClient(record["ipc"], kind="driver",
                                      agent_alive=lambda: pid_alive(agent_pid))
    cluster = None
    if record.get("address"):
        try:
            members = [n["address"] for n in client.info("nodes")]
        except exceptions.LightrayError:
            members = [record["address"]]
        cluster = (record.get("cluster_public"), members)
    set_current_client(client, namespace)
    return _Runtime(client, None, record["session_dir"], session, namespace, cluster)


def _reattach() -> None:
    """The agent this driver attached to is gone: attach through another live
    agent of its cluster on this host, if one runs (else calls keep raising
    the dead client's RuntimeNotRunningError, which says why)."""
    global _runtime
    old = _runtime
    record = cluster_agent(*old.cluster, exclude=old.session_dir)
    if record is None:
        return
    old.client.close()
    _runtime = _attach(record, old.namespace)
    _context()                   # get_runtime_context() names the new agent's node


def shutdown() -> None:
    """Stop the embedded runtime: workers end and every segment is unlinked.
    A process attached with init(address=...) only detaches."""
    global _runtime
    with _lock:
        if _runtime is not None and _runtime.dashboard is not None:
            _runtime.dashboard.stop()    # before the client it reads through closes
            _runtime.dashboard = None
            runtime_state.dashboard_url = None
        embedded, _runtime = _runtime, None
        if embedded is None:
            return
        runtime_envs.set_job_env(None)
        set_current_client(None)
        output_printer.detach()
        if embedded.process is None:
            embedded.client.close()
            return
        embedded.client.close(notify_agent="shutdown")
        try:
            embedded.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            embedded.process.kill()
            embedded.process.wait()


atexit.register(shutdown)


def is_initialized() -> bool:
    if _runtime is not None:
        return True
    current = current_client_or_none()
    return current is not None and not current.closed


def _auto_init():
    """Start a default runtime unless one runs (re-attach, if this driver's
    cluster agent died); the client of this process."""
    with _lock:
        if not is_initialized():
            init()
        elif (_runtime is not None and _runtime.cluster is not None
              and _runtime.client.closed and _runtime.client.dead_reason):
            _reattach()
        return current_client_or_none()


# Remote functions and actors submit through runtime.client_for_submission(),
# which calls this when no runtime runs: installed here so that they need not
# import this module.
runtime.set_auto_init(_auto_init)
_client_for_submission = runtime.client_for_submission


def _context():
    client = current_client_or_none()
    if client is not None:
        runtime_state.node_id = client.node_info["node_id"]
        output_printer.attach(client, _log_to_driver)
    return get_runtime_context()


# ------------------------------------------------------------------ objects

def put(value) -> ObjectRef:
    """Store value in the object store; returns its ObjectRef."""
    if isinstance(value, ObjectRef):
        raise TypeError("put() of an ObjectRef is not allowed: pass the ObjectRef itself, "
                        "or put a container holding it, e.g. put([ref])")
    client = _client_for_submission()
    if getattr(client, "runs_in_process", False):
        return client.put_value(value)
    try:
        serialized = serialization.serialize(value)
    except Exception as error:
        raise TypeError(f"put() could not serialize {type(value).__name__} object: {error}") from error
    # Large values wait for room in the store (the agent spills to make it)
    # and fail with ObjectStoreFullError only when spilling cannot help.
    return client.put_serialized(serialized)


def _refs_and_client(refs, what: str):
    for ref in refs:
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"{what}() takes ObjectRefs, got {type(ref).__name__}: {ref!r:.80}")
    if not refs:
        return None
    client = require_client_for(refs[0])
    for ref in refs:
        if ref._client is not client:
            require_client_for(ref)
            raise ValueError(f"{ref!r} belongs to another lightray session than {refs[0]!r}")
    return client


def get(object_refs, keys=None, /, *, timeout: float | None = None, **kwargs):
    """Values of one ObjectRef or a list of them; blocks until ready.

    With a Dask graph as first argument (``get(dsk, keys)``) lightray.get is
    a Dask scheduler; a list of ObjectRefs is never taken for a graph.
    """
    if isinstance(object_refs, ObjectRef):
        _check_get_kwargs(keys, kwargs)
        client = require_client_for(object_refs)
        return client.get_values([object_refs], timeout)[0]
    if isinstance(object_refs, (list, tuple)):
        _check_get_kwargs(keys, kwargs)
        refs = list(object_refs)
        client = _refs_and_client(refs, "get")
        if client is None:
            return []
        return client.get_values(refs, timeout)
    if isinstance(object_refs, collections.abc.Mapping) or hasattr(object_refs, "__dask_graph__"):
        if keys is None:
            raise TypeError("get(dsk, keys): the Dask scheduler needs the keys to compute")
        # dask is optional: lightray.dask (which needs it) is imported on first use.
        from .dask import scheduler as dask_scheduler
        return dask_scheduler.get(object_refs, keys, **kwargs)
    raise TypeError(f"get() takes an ObjectRef or a list of ObjectRefs, "
                    f"got {type(object_refs).__name__}: {object_refs!r:.80}")


def _dask_persist(collections, optimize_graph: bool = True, **kwargs):
    # Dask's persist protocol: dask.persist(..., scheduler=lightray.get) calls
    # lightray.get.persist(...), which keeps the results in the object store.
    # dask is optional: lightray.dask is imported on first use.
    from .dask import scheduler as dask_scheduler
    return dask_scheduler.persist(collections, optimize_graph, **kwargs)


get.persist = _dask_persist


def _check_get_kwargs(keys, kwargs) -> None:
    if keys is not None or kwargs:
        raise TypeError("get(ObjectRef(s)) takes only timeout=; keys and other arguments "
                        "belong to get(dsk, keys) on a Dask graph")


def wait(object_refs, *, num_returns: int = 1, timeout: float | None = None,
         fetch_local: bool = True):
    """(ready, not_ready): the first num_returns ready refs and the rest, in input order."""
    if isinstance(object_refs, ObjectRef) or not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"wait() takes a list of ObjectRefs, got {type(object_refs).__name__}")
    refs = list(object_refs)
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns < 0:
        raise ValueError(f"num_returns must be a non-negative int, got {num_returns!r}")
    if not refs:
        return [], []   # as in Ray: nothing to wait for, whatever num_returns asks
    if num_returns > len(refs):
        raise ValueError(f"num_returns={num_returns} is more than the {len(refs)} refs given")
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be None or >= 0, got {timeout!r}")
    if len(set(refs)) != len(refs):
        raise ValueError("wait() got the same ObjectRef more than once")
    client = _refs_and_client(refs, "wait")
    if client is None:
        return [], []
    client.wait_ready([r._id for r in refs], num_returns, timeout)
    ready, not_ready = [], []
    for ref in refs:
        if len(ready) < num_returns and client.is_ready(ref._id):
            ready.append(ref)
        else:
            not_ready.append(ref)
    return ready, not_ready


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task producing object_ref; get then raises TaskCancelledError.

    A queued task never runs; a running one gets KeyboardInterrupt, or with
    force=True its worker is killed (and the task is not retried). recursive:
    the tasks it submitted (on any node) are cancelled too.
    """
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() takes an ObjectRef, got {type(object_ref).__name__}")
    if not isinstance(force, bool) or not isinstance(recursive, bool):
        raise TypeError(f"cancel(): force and recursive must be bools, got "
                        f"{force!r} and {recursive!r}")
    require_client_for(object_ref).cancel(object_ref, force, recursive)


def memory_summary() -> dict:
    """The object store now: used_bytes, capacity_bytes, spilled_bytes (on disk
    now), restored_bytes, num_objects, spill_dir, and objects: one dict per
    object with object_id, size, state (in memory / spilled / restoring /
    pending), call_site and holders (the processes holding a ref) and pins
    (tasks and objects needing it)."""
    return _client_for_submission().info("memory", timeout=30.0)


def nodes() -> list:
    """Every node of the cluster this process is attached to, dead ones included:
    dicts with node_id, address, alive, resources, available (and store use),
    control: the node's part in the replicated control store ("leader", "replica"
    or None), suspect: seconds a live node has been silent once that is 2 s or
    more (else None), and incarnation: how many times it joined again after
    being declared dead."""
    return _client_for_submission().info("nodes")


def cluster_resources() -> dict:
    return _client_for_submission().info("resources")["total"]


def available_resources() -> dict:
    """What is free now; as in Ray, a resource with nothing left is left out."""
    available = _client_for_submission().info("resources")["available"]
    return {name: amount for name, amount in available.items() if amount > 0}


# ------------------------------------------------------------------ remote

def remote(*args, **options):
    """``@remote`` or ``@remote(num_cpus=..., ...)`` on a function."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("@lightray.remote takes either a function or only keyword options, "
                        "e.g. @lightray.remote(num_cpus=2)")
    def decorate(target):
        return _make_remote(target, options)
    return decorate


def _make_remote(target, options: dict):
    if isinstance(target, type):
        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"@lightray.remote needs a function, got {type(target).__name__}")
    return RemoteFunction(target, options)


# ------------------------------------------------------------------ actors

def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the live actor created with this name."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"get_actor() takes an actor name (a non-empty str), got {name!r}")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str or None, got {namespace!r}")
    client = _client_for_submission()
    namespace = runtime.namespace_for(namespace)
    found = client.info(("actor", namespace, name))
    if found is None:
        raise ValueError(f"no live actor named {name!r} in namespace {namespace!r}")
    actor_id, description = found
    return ActorHandle(actor_id, description, ObjectRef(handle_object_id(actor_id), client))


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Stop an actor now. Its pending and later calls raise ActorDiedError;
    with no_restart=False it restarts if it has restarts left."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() takes an actor handle, got {type(actor).__name__}: {actor!r:.80}")
    client = actor._lr_ref._client
    if client is None or client.closed:
        raise exceptions.RuntimeNotRunningError(
            f"{actor!r} belongs to a lightray session that is not running")
    if getattr(client, "runs_in_process", False):
        client.kill_actor(actor._lr_actor_id, bool(no_restart))
        return
    if no_restart:
        client.actor_caller().mark_killed(actor._lr_actor_id)
    client.send([(messages.ACTOR_KILL, actor._lr_actor_id, bool(no_restart))])
