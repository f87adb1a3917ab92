"""The ``lightray`` command line.

    lightray version
    lightray memory [--address ipc://...] [--limit N] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    from . import __version__
    parser = argparse.ArgumentParser(prog="lightray", description="lightray command line")
    parser.add_argument("--version", action="version", version=f"lightray {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("version", help="print the version")
    memory = sub.add_parser("memory", help="what the object store of a running runtime holds")
    memory.add_argument("--address", help="the agent's ipc:// address (default: the one "
                                          "runtime running on this host)")
    memory.add_argument("--limit", type=int, default=20,
                        help="show this many objects, largest first (default 20)")
    memory.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "version":
        print(f"lightray {__version__}")
        return 0
    if args.command == "memory":
        return _memory(args)
    parser.print_help()
    return 0


def running_agents() -> list:
    """ipc:// addresses of the agents running on this host (in our temp dir)."""
    from .agent import _pid_alive
    from .config import temp_dir
    from .transport.sockets import ipc_address
    root = temp_dir()
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        session_dir = os.path.join(root, name)
        try:
            with open(os.path.join(session_dir, "agent.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if _pid_alive(pid) and os.path.exists(os.path.join(session_dir, "agent.sock")):
            found.append((ipc_address(session_dir), pid))
    return found


def running_agent_records() -> list:
    """The agent.json records (plus session_dir) of the agents running on this host."""
    from .agent import AGENT_RECORD, _pid_alive
    from .config import temp_dir
    root = temp_dir()
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        session_dir = os.path.join(root, name)
        try:
            with open(os.path.join(session_dir, AGENT_RECORD)) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if _pid_alive(record.get("pid", 0)):
            record["session_dir"] = session_dir
            found.append(record)
    return found


def _memory(args) -> int:
    from .agent import _pid_alive
    from .client import CoreClient
    agents = running_agents()
    if args.address:
        agents = [(a, p) for a, p in agents if a == args.address] or [(args.address, 0)]
    if not agents:
        print("lightray memory: no lightray runtime is running on this host", file=sys.stderr)
        return 1
    if len(agents) > 1:
        print("lightray memory: several runtimes are running; pick one with --address:\n  "
              + "\n  ".join(a for a, _ in agents), file=sys.stderr)
        return 1
    address, pid = agents[0]
    try:
        client = CoreClient(address, kind="driver",
                            agent_alive=(lambda: _pid_alive(pid)) if pid else None)
    except (RuntimeError, OSError) as error:
        print(f"lightray memory: cannot reach {address}: {error}", file=sys.stderr)
        return 1
    try:
        summary = client.info("memory", timeout=30.0)
    finally:
        client.close()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(format_summary(summary, address, args.limit))
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


if __name__ == "__main__":
    sys.exit(main())
