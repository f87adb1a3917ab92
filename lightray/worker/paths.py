"""Where a worker listens for callers that bypass the agent (Unix stream sockets).

Shared by the workers (lightray.worker.tasks, actors) and their callers
(lightray.client.direct, actor_caller); imports nothing, so both sides can.
"""
from __future__ import annotations


def lease_stream_path(agent_address: str, worker_id: str) -> str:
    """The Unix socket where a worker takes tasks from drivers leasing it."""
    return f"{agent_address.rsplit('/', 1)[0][len('ipc://'):]}/{worker_id}.lease"


def actor_stream_path(agent_address: str, worker_id: str) -> str:
    """The Unix socket where an actor's worker takes calls (lightray.transport.stream)."""
    return f"{agent_address.rsplit('/', 1)[0][len('ipc://'):]}/{worker_id}.actor"
