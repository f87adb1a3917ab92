"""The entry point of a forked worker process: connect, pick a runner, serve.

    agent (fork) ──▶ worker_main ──▶ CoreClient (HELLO) ──▶ TaskRunner or ActorRunner ──▶ loop()
"""
from __future__ import annotations

import signal

from .. import runtime
from ..client.core import CoreClient
from ..runtime_context import state as context_state
from .actors import ActorRunner
from .tasks import TaskRunner


def worker_main(address: str, worker_id: str, agent_pid: int, actor: bool = False) -> None:
    """Entry point of a forked worker (never returns normally); actor: the
    worker is dedicated to one actor (lightray.worker.actors)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    client = CoreClient(address, kind="worker", worker_id=worker_id,
                        parent_pid=agent_pid, start=False)
    runtime.set_current_client(client)
    context_state.node_id = client.node_info["node_id"]
    context_state.worker_id = worker_id
    runner_class = ActorRunner if actor else TaskRunner
    runner = runner_class(client, client.node_info)
    client.start()
    runner.loop()
