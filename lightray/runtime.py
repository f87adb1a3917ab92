"""The process's current client: the bottom of the user-facing floor.

``lightray.init()`` (or a worker starting up) installs the CoreClient of this
process here; ObjectRef, remote functions and actor handles find it here
instead of reaching up into lightray.api or lightray.client. This module
imports nothing of lightray but the exceptions, so anything may import it.

Starting a default runtime when a task is submitted with none running is
lightray.api's job; api installs that step here (``set_auto_init``) when it
is imported, so remote functions and actors can ask for a client without
importing api.
"""
from __future__ import annotations

from .exceptions import RuntimeNotRunningError

_current = None             # the CoreClient of this process, if any
_namespace = None           # the namespace the driver gave init(namespace=...), if any
_auto_init = None           # installed by lightray.api: starts a default runtime, returns its client


def current_client_or_none():
    """The running client of this process, or None."""
    return _current


def set_current_client(client, namespace: str | None = None) -> None:
    """Install (or with None, remove) this process's client and the
    namespace its driver named in init()."""
    global _current, _namespace
    _current = client
    _namespace = namespace


def set_auto_init(start) -> None:
    """start() starts a default runtime if none runs and returns its client."""
    global _auto_init
    _auto_init = start


def client_for_submission():
    """The client of this process, starting a default runtime if there is none."""
    current = _current
    if current is not None and not current.closed:
        return current
    if _auto_init is None:
        raise RuntimeNotRunningError("no lightray runtime is running in this process; "
                                     "call lightray.init() first")
    return _auto_init()


def namespace_for(namespace: str | None) -> str:
    """The namespace a named actor lives in when the caller names none: the
    driver's (init(namespace=...)), else the runtime's."""
    if namespace is not None:
        return namespace
    if _namespace:
        return _namespace
    return client_for_submission().node_info.get("namespace") or "default"


def require_client_for(ref):
    """The client an ObjectRef belongs to, or a clear error if it stopped."""
    client = ref._client
    if client is None or client.closed:
        raise RuntimeNotRunningError(
            f"{ref!r} belongs to a lightray session that is not running "
            "(lightray.shutdown() was called, or this process never joined it)")
    return client
