"""The process's current client: the bottom of the user-facing floor.

``lightray.init()`` (or a worker starting up) installs the CoreClient of this
process here; ObjectRef, remote functions and actor handles find it here
instead of reaching up into lightray.api or lightray.client. This module
imports nothing of lightray but the exceptions, so anything may import it.
"""
from __future__ import annotations

from .exceptions import RuntimeNotRunningError

_current = None             # the CoreClient of this process, if any


def current_client_or_none():
    """The running client of this process, or None."""
    return _current


def set_current_client(client) -> None:
    global _current
    _current = client


def require_client_for(ref):
    """The client an ObjectRef belongs to, or a clear error if it stopped."""
    client = ref._client
    if client is None or client.closed:
        raise RuntimeNotRunningError(
            f"{ref!r} belongs to a lightray session that is not running "
            "(lightray.shutdown() was called, or this process never joined it)")
    return client
