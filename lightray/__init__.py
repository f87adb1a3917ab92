"""lightray: a light, embeddable Ray-style runtime.

    import lightray
    lightray.init()                      # embedded single-node runtime

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
"""
from . import exceptions
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
    "kill",
    "memory_summary",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "wait",
]
