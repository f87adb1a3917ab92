"""The entry point of a forked worker process: connect, pick a runner, serve.

    agent (fork) ──▶ worker_main ──▶ drop the agent's fds ──▶ CoreClient (HELLO)
                 ──▶ sys.stdout/sys.stderr captured (lightray.output.capture)
                 ──▶ TaskRunner or ActorRunner ──▶ loop()

A worker is forked without exec, so it starts with every file descriptor of
the agent: its listening sockets (the ipc socket, the mesh port), its
connections to peers and the control store's database. Close-on-exec does
nothing without an exec, so the worker closes them all (stdio stays) before
it opens its own; it never touches the agent's ZeroMQ context, whose I/O
thread was not forked.
"""
from __future__ import annotations

import gc
import os
import signal

from .. import runtime
from ..log import LineHandler, logger
from ..client.core import CoreClient
from ..output.capture import OutputCapture
from ..runtime_context import state as context_state
from .actors import ActorRunner
from .tasks import TaskRunner


def worker_main(address: str, worker_id: str, agent_pid: int, actor: bool = False) -> None:
    """Entry point of a forked worker (never returns normally); actor: the
    worker is dedicated to one actor (lightray.worker.actors)."""
    drop_inherited_fds()
    for handler in logger.handlers:   # the agent's, inherited: name this worker instead
        if isinstance(handler, LineHandler):
            handler.who = f"lightray worker {worker_id}"
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    client = CoreClient(address, kind="worker", worker_id=worker_id,
                        parent_pid=agent_pid, start=False)
    runtime.set_current_client(client)
    context_state.node_id = client.node_info["node_id"]
    context_state.worker_id = worker_id
    runner_class = ActorRunner if actor else TaskRunner
    runner = runner_class(client, client.node_info)
    output = OutputCapture(client, OutputCapture.session_dir_of(address),
                           context_state.node_id)
    output.install()
    runner.output = output
    client.start()
    runner.loop()


KEPT_FDS = (0, 1, 2)    # stdin, stdout, stderr: a worker's output goes where the agent's does


def drop_inherited_fds() -> None:
    """Close every descriptor inherited from the agent except stdio.

    The agent's Python objects that own those descriptors (sockets, files,
    mmaps) stay alive, unused, in this process; frozen first, so that no
    garbage collection here finalizes one later and closes a descriptor
    number this worker has reused by then."""
    gc.freeze()
    os.closerange(max(KEPT_FDS) + 1, _max_fd())


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 65536
