"""lightray: a light, embeddable Ray-style runtime.

    import lightray
    lightray.init()                      # embedded single-node runtime
                                         # (local_mode=True: all in this process)

    @lightray.remote
    def add(a, b):
        return a + b

    ref = add.remote(1, 2)               # an ObjectRef, at once
    lightray.get(ref)                    # 3

    @lightray.remote
    class Counter:                       # an actor: state in a process of its own
        def __init__(self):
            self.n = 0
        def inc(self):
            self.n += 1
            return self.n

    counter = Counter.remote()
    lightray.get(counter.inc.remote())   # 1

    lightray.state.list_tasks(filters=[("state", "=", "FAILED")])   # what failed, every node
    lightray.timeline("trace.json")      # a Chrome / Perfetto trace of the tasks

What lives where, in layers, lowest first (a module imports only from its
own layer's lower modules and from the layers below it):

 1 config           every knob, with its environment variable and default
   log              the "lightray" loggers: levels, init(logging_level=), LIGHTRAY_LOG_LEVEL
   exceptions       the errors user code sees (TaskError, ActorDiedError, ...)
   ids              task, object and actor-handle ids
   memory_limits    the memory this process may use: its cgroup's (v1, v2) limit, else RAM
   resources        resource requests in exact units; detecting CPUs
   scheduling       strategies (SPREAD, NodeAffinity) and the placement policy, no I/O
   states           the state names of tasks and workers in an agent
   task_spec        the task spec tuple and the names of its fields
   runtime_context  get_runtime_context(): where this code runs
   transport/       messages and sockets between processes
   store/           shared-memory segments, spilling, chunks between nodes, control store
 2 serialization    values to payloads and back (pickle 5, cloudpickle)
   runtime          this process's current client (and the auto-init hook)
   task_warnings    warnings of a task or actor call, re-emitted where its result is read
   call_site        where user code created an object (memory_summary)
   runtime_env      runtime environments: env_vars, working_dir, py_modules (packaged, applied)
   options          validation of @remote(...) and .options(...)
 3 object_ref       ObjectRef
   remote_function  @remote on functions: the task submit path
   actor            @remote on classes: ActorClass, ActorHandle, method
 4 output/          what tasks print: captured in workers, logged, relayed, printed by drivers
   client/          a process's connection to its agent: refs, objects, leases, actor calls
   worker/          the task and actor runners of a worker process
   agent/           the node agent: its state, the I/O loop, the cluster
   local/           local mode: the whole runtime in this process, in threads
 5 discovery        finding the agents running on this host (init(address="auto"))
   api              init, shutdown, get, put, wait, cancel, remote, get_actor, kill, ...
   kv               lightray.kv: put/get/delete/list/compare_and_set, replicated
   jobs/            lightray.jobs: driver programs submitted to a cluster, their records and logs
   observe/         task events, the state API's gathering, the timeline, their commands
                    (its events and queries do no I/O: the agent and workers use them)
   state            lightray.state: list_tasks/actors/objects/nodes, summarize_tasks
   dashboard/       the live web page of the cluster, read from the state API
   cli              the ``lightray`` command line (it also reads lightray.__version__)
 6 util/            ActorPool, Queue: built on the public API
   dask/            a Dask scheduler (needs dask; api imports it only when given a graph)
"""
from . import exceptions, jobs, kv, state
from .actor import ActorClass, ActorHandle, method
from .api import (
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_actor,
    init,
    is_initialized,
    kill,
    memory_summary,
    nodes,
    put,
    remote,
    shutdown,
    wait,
)
from .object_ref import ObjectRef
from .observe.timeline import timeline
from .runtime_context import get_runtime_context
from .scheduling import NodeAffinity

__version__ = "0.1.0"

__all__ = [
    "ActorClass",
    "ActorHandle",
    "NodeAffinity",
    "ObjectRef",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_runtime_context",
    "init",
    "is_initialized",
    "jobs",
    "kill",
    "kv",
    "memory_summary",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "state",
    "timeline",
    "wait",
]
