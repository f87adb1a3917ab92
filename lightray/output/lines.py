"""Batches of printed lines: their shape, their bounds, the prefix of a line.

A batch is a list of (stream, line): stream 1 (stdout) or 2 (stderr), line a
str without its newline, already prefixed with who printed it. Every process
that receives one (an agent from a worker or a peer, a driver from its agent)
checks it with ``valid_batch`` first: a bad batch is dropped, never printed.
"""
from __future__ import annotations

STDOUT = 1
STDERR = 2

MAX_LINE = 64 * 1024        # characters of a line kept (longer ones are cut, marked)
MAX_BATCH = 4096            # lines in one batch (a worker sends more in several)
MAX_DRIVER = 256            # characters of a driver's "node id/client id"
CUT_MARK = " [... line cut]"


def prefix(name: str, pid: int, node_id: str) -> str:
    """'(name pid=1234 node=ab12cd)': who printed a line."""
    return f"({name} pid={pid} node={node_id[:6]})"


def clip(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[:MAX_LINE] + CUT_MARK


def valid_batch(batch) -> bool:
    return (type(batch) is list and 0 < len(batch) <= MAX_BATCH and all(
        type(item) is tuple and len(item) == 2 and (item[0] == STDOUT or item[0] == STDERR)
        and type(item[0]) is int and type(item[1]) is str
        and len(item[1]) <= MAX_LINE + len(CUT_MARK) for item in batch))


def valid_driver(driver) -> bool:
    """"node id/client id", as runtime_context.state.output_driver makes it."""
    return type(driver) is str and 0 < len(driver) <= MAX_DRIVER and "/" in driver


def split_driver(driver: str) -> tuple:
    """(node id, client id bytes) of a driver string."""
    node_id, _, client_id = driver.partition("/")
    return node_id, client_id.encode()


def make_driver(node_id: str, client_id: bytes) -> str:
    return f"{node_id}/{client_id.decode()}"
