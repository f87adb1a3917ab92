"""The driver side: its tasks' printed lines, printed where its own output goes.

    agent ──(OUTPUT, [(stream, line), ...])──▶ CoreClient I/O thread ──▶ print_batch
        ──▶ sys.stdout (stream 1) / sys.stderr (stream 2), looked up at each batch,
            so whatever replaced them (pytest's capture, a notebook) gets the lines

Printed in the client's I/O thread, in the order the agent sent them and
before the ops that came after them (a result's READY), so a line a task
printed before returning is on the driver's stdout before ``get`` of that
result returns, for tasks through the agent. Nothing here may stop that
thread: a batch of the wrong shape is dropped, a stream that fails to
write (closed, or an encoding that cannot show a character) is skipped.
"""
from __future__ import annotations

import sys

from ..runtime_context import state as context_state
from .lines import STDOUT, make_driver, valid_batch


def attach(client, log_to_driver: bool) -> None:
    """Make this process (client's driver) the one its tasks' output goes to;
    log_to_driver=False: none (the lines stay in the workers' log files)."""
    if getattr(client, "runs_in_process", False):   # local mode: tasks print here already
        context_state.output_driver = None
        return
    context_state.output_driver = (make_driver(client.node_info["node_id"], client.client_id)
                                   if log_to_driver else None)
    client.on_output = print_batch if log_to_driver else None


def detach() -> None:
    context_state.output_driver = None


def print_batch(batch) -> None:
    if not valid_batch(batch):
        return
    out = [line for stream, line in batch if stream == STDOUT]
    err = [line for stream, line in batch if stream != STDOUT]
    if out:
        _write(sys.stdout, out)
    if err:
        _write(sys.stderr, err)


def _write(stream, lines: list) -> None:
    if stream is None:
        return
    text = "\n".join(lines) + "\n"
    try:
        try:
            stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(stream, "encoding", None) or "ascii"
            stream.write(text.encode(encoding, "replace").decode(encoding, "replace"))
        stream.flush()
    except (OSError, ValueError, UnicodeError, AttributeError):
        pass   # closed or unwritable: the lines are in the workers' log files
