"""lightray: a light, embeddable Ray-style runtime.

    import lightray
    lightray.init()                      # embedded single-node runtime

    @lightray.remote
    def add(a, b):
        return a + b

    ref = add.remote(1, 2)               # an ObjectRef, at once
    lightray.get(ref)                    # 3
"""
from . import exceptions
from .api import (
    available_resources,
    cancel,
    cluster_resources,
    get,
    init,
    is_initialized,
    put,
    remote,
    shutdown,
    wait,
)
from .object_ref import ObjectRef
from .runtime_context import get_runtime_context

__version__ = "0.1.0"

__all__ = [
    "ObjectRef",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "get",
    "get_runtime_context",
    "init",
    "is_initialized",
    "put",
    "remote",
    "shutdown",
    "wait",
]
