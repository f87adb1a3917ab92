"""``lightray logs``: the log files of the workers, from any node of the cluster.

    lightray logs [--node NODE]                      the log files of a node (default: every node)
    lightray logs [--node NODE] --worker PID         a worker's log (what its tasks printed)
    lightray logs [--node NODE] --actor NAME         the log of the worker running a named actor
                  [--follow]                         then print new lines as they come (Ctrl-C ends)

The command asks the agent it reaches (--address / --cluster-key as every
command); that agent answers from its own files or asks the node named over
the mesh (lightray.output.logs). NODE is a node id or a prefix of one, as
the prefix of a printed line shows it; without --node a worker or actor is
looked for on every alive node, this one first.
"""
from __future__ import annotations

import sys
import time

import zmq

from .. import exceptions
from ..agent.session import pid_alive
from ..client.core import CoreClient

REQUEST_TIMEOUT = 30.0   # seconds to wait for an agent's answer
FOLLOW_INTERVAL = 0.5    # seconds between two reads of a followed log


def add_parser(sub, target) -> None:
    """Register ``logs`` on the ``lightray`` command line (target: --address, --cluster-key)."""
    logs = sub.add_parser("logs", parents=[target],
                          help="what tasks printed: the workers' log files, from any node")
    logs.add_argument("--node", default="",
                      help="a node id, or the start of one (default: every node)")
    which = logs.add_mutually_exclusive_group()
    which.add_argument("--worker", type=int, metavar="PID",
                       help="print the log of the worker with this pid")
    which.add_argument("--actor", metavar="NAME",
                       help="print the log of the worker running the actor of this name")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="with --worker or --actor: keep printing new lines (Ctrl-C ends)")


def run(args, target, error) -> int:
    """Run ``lightray logs``; target(address, key) -> (ipc, pid, label) finds
    the agent, error is the exception class for a message to the user."""
    if args.follow and args.worker is None and args.actor is None:
        raise error("--follow needs --worker PID or --actor NAME")
    if args.worker is not None and args.worker <= 0:
        raise error(f"--worker takes a process id, got {args.worker}")
    ipc, pid, _label = target(args.address, args.cluster_key)
    try:
        client = CoreClient(ipc, kind="driver",
                            agent_alive=(lambda: pid_alive(pid)) if pid else None)
    except (RuntimeError, OSError, zmq.ZMQError) as problem:
        raise error(f"cannot reach the agent at {ipc}: {problem}") from None
    try:
        reader = _Reader(client, ipc, error)
        if args.worker is None and args.actor is None:
            return _list(reader, args.node)
        return _print_log(reader, args)
    finally:
        client.close()


class _Reader:
    def __init__(self, client, ipc: str, error):
        self.client = client
        self.ipc = ipc
        self.error = error

    def ask(self, what):
        try:
            return self.client.info(what, timeout=REQUEST_TIMEOUT)
        except exceptions.GetTimeoutError as problem:
            raise self.error(f"no answer from the agent at {self.ipc}: {problem}") from None
        except exceptions.RuntimeNotRunningError as problem:
            raise self.error(f"the agent at {self.ipc} stopped: {problem}") from None

    def logs(self, node: str, request: tuple) -> dict:
        answer = self.ask(("logs", node, request))
        if type(answer) is not dict:
            raise self.error(f"the agent at {self.ipc} does not serve logs (another version?)")
        return answer

    def nodes(self, node: str) -> list:
        """The ids of the alive nodes to look at: node's, or every one (this one first)."""
        if node:
            return [node]
        here = self.client.node_info["node_id"]
        alive = [n["node_id"] for n in self.ask("nodes") or () if n.get("alive")]
        return [here] + [n for n in alive if n != here]


def _list(reader: _Reader, node: str) -> int:
    rows = [("NODE", "PID", "ALIVE", "ACTOR", "BYTES")]
    for node_id in reader.nodes(node):
        answer = reader.logs(node_id, ("list",))
        if "error" in answer:
            raise reader.error(answer["error"])
        for entry in answer["files"]:
            actor = entry.get("actor") or ""
            if actor and entry.get("actor_name"):
                actor += f" ({entry['actor_name']})"
            rows.append((node_id, str(entry["pid"]), "yes" if entry["alive"] else "no",
                         actor or "-", f"{entry['bytes']:,}"))
    if len(rows) == 1:
        print("no worker log files")
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _print_log(reader: _Reader, args) -> int:
    kind, key = ("worker", args.worker) if args.worker is not None else ("actor", args.actor)
    answer = node = None
    errors = []
    for node in reader.nodes(args.node):
        answer = reader.logs(node, ("read", kind, key, 0))
        if "error" not in answer:
            break
        errors.append(answer["error"])
    if answer is None or "error" in answer:
        what = f"worker {key}" if kind == "worker" else f"actor {key!r}"
        raise reader.error(f"no log of {what} found" + (f": {errors[-1]}" if errors else ""))
    pid = answer["pid"]
    while True:   # the whole file, in reads of at most READ_BYTES
        _write(answer["data"])
        if not answer["data"] or answer["next"] >= answer["size"]:
            break
        answer = reader.logs(node, ("read", "worker", pid, answer["next"]))
        if "error" in answer:
            raise reader.error(answer["error"])
    if not args.follow:
        return 0
    offset = answer["next"]
    while True:   # until Ctrl-C (KeyboardInterrupt: the command line exits 130)
        time.sleep(FOLLOW_INTERVAL)
        answer = reader.logs(node, ("read", "worker", pid, offset))
        if "error" in answer:
            raise reader.error(answer["error"])
        _write(answer["data"])
        offset = answer["next"]


def _write(text: str) -> None:
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()
