"""The ``lightray`` command line.

    lightray version
    lightray memory [--address HOST:PORT | ipc://...] [--cluster-key FILE] [--limit N] [--json]
        what the object store of a running runtime holds
    lightray status [--address HOST:PORT | ipc://...] [--cluster-key FILE] [--json]
        every node of the cluster (dead ones too): address, alive, suspect
        (silent N s) or dead and why, head, control role (leader, replica),
        resources used/total, memory, store use and spilled bytes
    lightray list tasks|actors|objects|nodes [--filter KEY=VALUE]... [--limit N] [--json]
    lightray summary tasks [--json]
    lightray timeline -o FILE
        the state API and the timeline from the shell (lightray.observe.cli);
        they take --address and --cluster-key as status does
    lightray dashboard [--address ...] [--cluster-key FILE] [--port N] [--host H]
        serve a live web page of the cluster (lightray.dashboard)
    lightray stop [--address HOST:PORT | ipc://...]... [--cluster-key FILE] [--force]
                  [--timeout SECONDS]
        stop this user's cluster agents started on this host with lightray-agent,
        or only those named (SIGTERM, then SIGKILL after the timeout; embedded
        runtimes are left to the drivers that own them)
    lightray logs [--node NODE] [--worker PID | --actor NAME] [--follow]
        what tasks printed: the workers' log files, from any node
        (lightray.output.command)
    lightray job submit|status|logs|stop|list [--address ...] [--cluster-key FILE] ...
        driver programs run by the cluster, their records and output (lightray.jobs.cli)

Without --address, status picks the cluster as ``init(address="auto")``
does: LIGHTRAY_ADDRESS, else the cluster last started on this host, else the
one cluster agent running here; memory takes the one runtime running here.
A key given (--cluster-key, else LIGHTRAY_CLUSTER_KEY) must be that
cluster's: otherwise the command fails at once saying where the right one
is; none is needed on the agent's host.

No command prints a Python traceback for a mistake of its user or a reader
that went away (``lightray status --json | head``): a one-line message on
stderr and exit status 1 (LIGHTRAY_LOG_LEVEL=DEBUG adds the traceback of an
unexpected error).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback

import zmq

from . import __version__, exceptions
from .agent.session import pid_alive, reclaim_dead_sessions
from .api import init as lightray_init
from .client.core import CoreClient
from .output import command as logs_command
from .config import JOB_RUNTIME_ENV_ENV
from .jobs import cli as job_cli
from .observe import cli as observe_cli
from .dashboard import cli as dashboard_cli
from .discovery import (NoClusterError, agent_at, auto_agent, check_cluster_key, describe,
                        running_agent_records)

STOP_TIMEOUT = 10.0      # seconds `lightray stop` waits after SIGTERM before SIGKILL
KILL_WAIT = 5.0          # seconds it then waits for SIGKILLed agents to go
STATUS_TIMEOUT = 30.0    # seconds `lightray status` waits for the agent's answer


class _CliError(Exception):
    """A message for the user; the command exits with status 1."""


def _target_options() -> argparse.ArgumentParser:
    """--address and --cluster-key, which every command that talks to an agent takes."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--address",
                         help="HOST:PORT of an agent of a cluster running on this host, or the "
                              "ipc:// address of an embedded runtime (default: see below)")
    options.add_argument("--cluster-key", metavar="FILE",
                         help="the cluster's key file, checked against the agent's "
                              "(default: $LIGHTRAY_CLUSTER_KEY; not needed on its host)")
    return options


def _parser() -> argparse.ArgumentParser:
    target = _target_options()
    parser = argparse.ArgumentParser(prog="lightray", description="lightray command line",
                                     epilog="Without --address: status uses the cluster "
                                            "init(address=\"auto\") would, memory the one "
                                            "runtime running here, stop every agent of yours.")
    parser.add_argument("--version", action="version", version=f"lightray {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("version", help="print the version")
    memory = sub.add_parser("memory", parents=[target],
                            help="what the object store of a running runtime holds")
    memory.add_argument("--limit", type=int, default=20,
                        help="show this many objects, largest first (default 20)")
    memory.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    status = sub.add_parser("status", parents=[target],
                            help="every node of the cluster: alive or dead, resources, "
                                 "store use")
    status.add_argument("--json", action="store_true", help="print the nodes as JSON")
    observe_cli.register(sub, target)   # list, summary, timeline (lightray.observe.cli)
    logs_command.add_parser(sub, target)
    dashboard_cli.add_parser(sub, [target])
    stop = sub.add_parser("stop", help="stop your lightray-agent processes on this host "
                                       "(or only those named with --address)")
    stop.add_argument("--address", action="append", default=[],
                      help="HOST:PORT (or ipc://) of an agent to stop; repeat for several "
                           "(default: every cluster agent of yours on this host)")
    stop.add_argument("--cluster-key", metavar="FILE",
                      help="the cluster's key file: stop only if it is the named agents' key")
    stop.add_argument("--force", action="store_true",
                      help="SIGKILL at once instead of SIGTERM first")
    stop.add_argument("--timeout", type=float, default=STOP_TIMEOUT, metavar="SECONDS",
                      help="how long to wait for agents to exit after SIGTERM before "
                           f"SIGKILLing them (default {STOP_TIMEOUT:g})")
    job_cli.add_parser(sub, target)
    return parser


def main(argv=None) -> int:
    parser = _parser()
    # argparse itself exits (status 2) with a usage line for a bad command line.
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        status = _run(parser, args)
        sys.stdout.flush()   # here, not at exit: a closed pipe is seen by the except below
        return status
    except BrokenPipeError:
        # The reader went away (`lightray status --json | head`): nothing
        # more to say; point stdout at /dev/null so the exit's flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except KeyboardInterrupt:
        return 130
    except _CliError as error:
        print(f"lightray {args.command}: {error}", file=sys.stderr)
        return 1
    except (exceptions.LightrayError, OSError, ValueError, TypeError) as error:
        print(f"lightray {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        if os.environ.get("LIGHTRAY_LOG_LEVEL", "").upper() == "DEBUG":
            traceback.print_exc()
        return 1


def _run(parser, args) -> int:
    if args.command == "version":
        print(f"lightray {__version__}")
        return 0
    if args.command == "memory":
        return _memory(args)
    if args.command == "status":
        return _status(args)
    if args.command == "stop":
        return _stop(args)
    if args.command == "logs":
        return logs_command.run(args, _target, _CliError)
    if args.command == "job":
        return job_cli.run(args, _attach, _CliError)
    if args.command in observe_cli.COMMANDS:
        return observe_cli.run(args)
    if args.command == "dashboard":
        return dashboard_cli.run(args)
    parser.print_help()
    return 0


def running_agents() -> list:
    """(ipc:// address, pid) of the agents running on this host (in our temp dir)."""
    return [(record["ipc"], record["pid"]) for record in running_agent_records()]


def _memory(args) -> int:
    if args.address:
        ipc, pid, label = _target(args.address, args.cluster_key)
    else:
        records = running_agent_records()
        if not records:
            raise _CliError("no lightray runtime is running on this host")
        if len(records) > 1:
            raise _CliError("several runtimes are running; pick one with --address:\n  "
                            + "\n  ".join(describe(r) for r in records))
        _check_key(records[0], args.cluster_key)
        ipc, pid, label = records[0]["ipc"], records[0]["pid"], records[0]["ipc"]
    summary = _ask(ipc, pid, "memory")
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(format_summary(summary, label, args.limit))
    return 0


def format_summary(summary: dict, address: str, limit: int) -> str:
    mib = 1 << 20
    lines = [
        f"object store of {address}",
        f"  in memory {summary['used_bytes'] / mib:,.1f} MiB of "
        f"{summary['capacity_bytes'] / mib:,.1f} MiB"
        f" ({summary['reserved_bytes'] / mib:,.1f} MiB reserved by writers)",
        f"  spilled   {summary['spilled_bytes'] / mib:,.1f} MiB now, "
        f"{summary['spilled_bytes_total'] / mib:,.1f} MiB in all, restored "
        f"{summary['restored_bytes'] / mib:,.1f} MiB, to {summary['spill_dir']}",
        f"  objects   {summary['num_objects']}",
    ]
    objects = sorted(summary["objects"], key=lambda o: o["size"], reverse=True)[:max(limit, 0)]
    if objects:
        lines.append("")
        lines.append(f"  {'object id':32}  {'size':>12}  {'state':21}  holders / call site")
        for row in objects:
            holders = ", ".join(row["holders"]) or "-"
            if row["pins"]:
                holders += f" +{row['pins']} pin(s)"
            lines.append(f"  {row['object_id']:32}  {row['size']:>12,}  {row['state']:21}  "
                         f"{holders}  {row['call_site']}")
        if len(summary["objects"]) > len(objects):
            lines.append(f"  ... {len(summary['objects']) - len(objects)} more")
    return "\n".join(lines)


# ------------------------------------------------------------------ status

def _status(args) -> int:
    ipc, pid, label = _target(args.address, args.cluster_key)
    nodes = _ask(ipc, pid, "nodes")
    if args.json:
        print(json.dumps(nodes, indent=2, sort_keys=True))
        return 0
    print(format_status(nodes, label))
    return 0


def _target(address, cluster_key=None) -> tuple:
    """(ipc address, agent pid, what the user named) of the agent to ask,
    once a key given is found to be its cluster's."""
    try:
        record = agent_at(address) if address else auto_agent()
    except NoClusterError as error:
        message = str(error)
        embedded = [r for r in running_agent_records() if not r.get("address")]
        if embedded:
            message += ("; runtimes without a cluster run here, see one with --address:\n  "
                        + "\n  ".join(describe(r) for r in embedded))
        raise _CliError(message) from None
    except (ConnectionError, ValueError) as error:
        raise _CliError(str(error)) from None
    _check_key(record, cluster_key)
    return record["ipc"], record["pid"], address or record.get("address") or record["ipc"]


def _attach(args) -> None:
    """This process, a driver of the cluster --address names (as status finds it)."""
    from_env = os.environ.pop(JOB_RUNTIME_ENV_ENV, None)   # never a job's env for the CLI
    try:
        ipc, _, _ = _target(args.address, args.cluster_key)
        lightray_init(address=ipc)
    finally:
        if from_env is not None:
            os.environ[JOB_RUNTIME_ENV_ENV] = from_env


def _check_key(record: dict, cluster_key) -> None:
    try:
        check_cluster_key(record, cluster_key)
    except ValueError as error:
        raise _CliError(str(error)) from None


def _ask(ipc: str, pid: int, what: str):
    """The agent's answer to an INFO request (what: "nodes", "memory")."""
    try:
        client = CoreClient(ipc, kind="driver",
                            agent_alive=(lambda: pid_alive(pid)) if pid else None)
    except (RuntimeError, OSError, zmq.ZMQError) as error:
        raise _CliError(f"cannot reach the agent at {ipc}: {error}") from None
    try:
        return client.info(what, timeout=STATUS_TIMEOUT)
    except exceptions.GetTimeoutError as error:
        raise _CliError(f"no answer from the agent at {ipc}: {error}") from None
    except exceptions.RuntimeNotRunningError as error:
        raise _CliError(f"the agent at {ipc} stopped: {error}") from None
    finally:
        client.close()


def format_status(nodes: list, label: str) -> str:
    """The nodes as a table, the head first, then by address."""
    mib = 1 << 20
    alive = sum(1 for n in nodes if n.get("alive"))
    header = (f"lightray cluster at {label}: {len(nodes)} node(s), {alive} alive, "
              f"{len(nodes) - alive} dead")
    lines = [header]
    rows = [("NODE", "ADDRESS", "STATE", "HEAD", "CONTROL", "RESOURCES (used/total)",
             "STORE MiB (used/capacity)", "SPILLED MiB", "MEMORY")]
    ordered = sorted(nodes, key=lambda n: (not n.get("is_head"), not n.get("alive"),
                                           str(n.get("address")), n.get("node_id", "")))
    for node in ordered:
        if node.get("alive") and node.get("suspect") is not None:
            state = f"suspect (silent {node['suspect']:g} s)"
        elif node.get("alive"):
            state = "alive, hot" if node.get("hot") else "alive"
        else:
            state = f"dead ({node['died']})" if node.get("died") else "dead"
        rows.append((
            str(node.get("node_id", "?")), str(node.get("address") or "-"), state,
            "head" if node.get("is_head") else "", node.get("control") or "",
            format_resources(node),
            _store(node), f"{node.get('spilled', 0) / mib:,.1f}", _memory_use(node)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _memory_use(node: dict) -> str:
    """The node's memory use (its cgroup's where it has a limit, else RAM) as
    its last heartbeat told it; "?" for a dead node or before one (an agent
    outside a cluster sends none: its fraction stays exactly 0)."""
    if not node.get("alive") or not node.get("store_capacity") or not node.get("memory_fraction"):
        return "?"
    return f"{node.get('memory_fraction', 0.0):.0%}"


def _store(node: dict) -> str:
    """"used/capacity" in MiB; "?" before a peer's first heartbeat told them."""
    mib = 1 << 20
    if not node.get("store_capacity"):
        return "?"
    return f"{node.get('store_used', 0) / mib:,.1f}/{node['store_capacity'] / mib:,.1f}"


def format_resources(node: dict) -> str:
    """"CPU 1.0/2.0, memory 0.0/4.0" (used/total) for every resource the node
    has (none of zero); a dead node's use is unknown: "CPU ?/2.0"."""
    total = node.get("resources") or {}
    available = node.get("available") or {}
    parts = []
    for name in sorted(total, key=lambda n: (n not in ("CPU", "GPU"), n)):
        amount = total[name]
        if not amount:
            continue
        if node.get("alive") and name in available:
            used = _amount(max(amount - available[name], 0.0))
        else:
            used = "?"
        parts.append(f"{name} {used}/{_amount(amount)}")
    return ", ".join(parts) or "-"


def _amount(value) -> str:
    """1 -> "1.0", 0.25 -> "0.25" (resources count in ten-thousandths)."""
    text = f"{float(value):.4f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


# -------------------------------------------------------------------- stop

def _stop(args) -> int:
    import psutil  # only `lightray stop` needs it; the other commands start faster without
    targets = []
    if args.address:
        for address in args.address:
            try:
                record = agent_at(address)
            except (ConnectionError, ValueError) as error:
                raise _CliError(str(error)) from None
            _check_key(record, args.cluster_key)
            process = _agent_process(record, named=True)
            if process is None:
                raise _CliError(f"no lightray agent of yours runs at {address}")
            targets.append((record, process))
    else:
        for record in running_agent_records():
            if args.cluster_key is not None:
                try:
                    check_cluster_key(record, args.cluster_key)
                except ValueError:
                    continue   # another cluster's agent
            process = _agent_process(record)
            if process is not None:
                targets.append((record, process))
    if not targets:
        print("no lightray agents of yours running on this host")
        return 0
    failed = []

    def send(targets, sig):
        sent = []
        for record, process in targets:
            try:
                process.send_signal(sig)    # psutil: never a process that reused the pid
                sent.append((record, process))
            except psutil.NoSuchProcess:
                pass                        # gone already
            except psutil.AccessDenied as error:
                failed.append((record, f"cannot signal it: {error}"))
        return sent

    def wait(targets, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = [(r, p) for r, p in targets if pid_alive(p.pid)]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)

    killed = []
    left = send(targets, signal.SIGKILL if args.force else signal.SIGTERM)
    if args.force:
        killed = left
    else:
        left = wait(left, max(args.timeout, 0.0))
        if left:
            print(f"lightray stop: {len(left)} agent(s) still running {args.timeout:g} s "
                  "after SIGTERM; sending SIGKILL", file=sys.stderr)
            killed = send(left, signal.SIGKILL)
    for record, _ in wait(killed, KILL_WAIT):
        failed.append((record, f"still running {KILL_WAIT:g} s after SIGKILL"))
    # What a SIGKILLed agent leaves (segments, spill files, session directory).
    reclaim_dead_sessions()
    failed_pids = {record["pid"] for record, _ in failed}
    stopped = [record for record, _ in targets if record["pid"] not in failed_pids]
    for record in stopped:
        how = " (SIGKILL)" if any(r is record for r, _ in killed) else ""
        print(f"stopped {describe(record)}{how}")
    for record, why in failed:
        print(f"lightray stop: could not stop {describe(record)}: {why}",
              file=sys.stderr)
    print(f"stopped {len(stopped)} lightray agent(s)")
    return 1 if failed else 0


def _agent_process(record: dict, named: bool = False):
    """The psutil.Process of a record's agent if `lightray stop` should stop
    it: really a lightray agent (not a process that reused the pid) of this
    user (records can sit in a temp directory others share, with
    LIGHTRAY_TEMP_DIR), and, unless named, not one embedded by a driver
    (started with --parent-pid; its driver owns it). None otherwise."""
    import psutil  # as in _stop
    try:
        pid = int(record.get("pid", 0))
        if pid <= 0:
            return None
        process = psutil.Process(pid)
        command = process.cmdline()
        owner = process.uids().real
    except (psutil.Error, ValueError, TypeError, OSError):
        return None
    if owner != os.getuid():
        return None
    if not any("lightray.agent" in word or "lightray-agent" in word for word in command):
        return None
    if named or record.get("address"):
        return process
    # A lone agent (no cluster) started by hand with lightray-agent is ours
    # to stop too; an embedded one is not.
    for position, word in enumerate(command):
        value = None
        if word == "--parent-pid" and position + 1 < len(command):
            value = command[position + 1]
        elif word.startswith("--parent-pid="):
            value = word.split("=", 1)[1]
        if value is not None and value.strip() not in ("", "0"):
            return None
    return process


if __name__ == "__main__":
    sys.exit(main())
