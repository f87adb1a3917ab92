"""``lightray list``, ``lightray summary`` and ``lightray timeline`` (registered by lightray.cli).

    lightray list tasks|actors|objects|nodes [--filter KEY=VALUE | KEY!=VALUE]...
                  [--limit N] [--json] [--address ...] [--cluster-key FILE]
        the rows of lightray.state.list_<kind> as a table (--json: exactly the
        list the Python call returns)
    lightray summary tasks [--json]
        task counts by name and state (lightray.state.summarize_tasks)
    lightray timeline -o FILE
        a Chrome / Perfetto trace of the tasks recorded (lightray.timeline)

A node that did not answer is named on stderr; the rows are the others'.
"""
from __future__ import annotations

import json
import sys
import time
import warnings

from . import gather
from .timeline import write_timeline

COMMANDS = ("list", "summary", "timeline")
KINDS = ("tasks", "actors", "objects", "nodes")


def register(sub, target) -> None:
    """Add the commands to lightray.cli's subparsers (target: its --address
    and --cluster-key options)."""
    listing = sub.add_parser("list", parents=[target],
                             help="tasks, actors, objects or nodes of the cluster")
    listing.add_argument("kind", choices=KINDS)
    listing.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                         help="keep rows whose KEY is VALUE (KEY!=VALUE: is not); repeat "
                              "to combine")
    listing.add_argument("--limit", type=int, default=gather.DEFAULT_LIMIT,
                         help=f"at most this many rows (default {gather.DEFAULT_LIMIT})")
    listing.add_argument("--json", action="store_true", help="print the rows as JSON")
    summary = sub.add_parser("summary", parents=[target], help="task counts by name and state")
    summary.add_argument("kind", choices=("tasks",))
    summary.add_argument("--json", action="store_true", help="print the counts as JSON")
    timeline = sub.add_parser("timeline", parents=[target],
                              help="write a Chrome / Perfetto trace of the recorded tasks")
    timeline.add_argument("-o", "--output", required=True, metavar="FILE",
                          help="where to write the trace JSON")


def parse_filter(text: str) -> tuple:
    """"state=FAILED" -> ("state", "=", "FAILED"); "state!=FAILED" -> "!="."""
    for op in ("!=", "="):
        key, found, value = text.partition(op)
        if found:
            if not key:
                raise ValueError(f"the filter {text!r} names no key (KEY=VALUE)")
            return key.strip(), op, value.strip()
    raise ValueError(f"the filter {text!r} is not KEY=VALUE or KEY!=VALUE")


def run(args) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", gather.StateWarning)
        status = _run(args)
    for warning in caught:
        if issubclass(warning.category, gather.StateWarning):
            print(f"lightray {args.command}: warning: {warning.message}", file=sys.stderr)
    return status


def _run(args) -> int:
    where = {"address": args.address, "cluster_key": args.cluster_key}
    if args.command == "timeline":
        count = write_timeline(args.output, **where)
        print(f"wrote {count} slice(s) to {args.output}")
        return 0
    if args.command == "summary":
        counts = gather.task_summary(**where)
        print(json.dumps(counts, indent=2, sort_keys=True) if args.json
              else format_summary(counts))
        return 0
    filters = [parse_filter(text) for text in args.filter]
    rows = gather.listing(args.kind, filters, args.limit, **where)
    print(json.dumps(rows, indent=2, sort_keys=True) if args.json
          else format_rows(args.kind, rows))
    return 0


_COLUMNS = {
    "tasks": ("task_id", "name", "type", "state", "node_id", "worker_pid", "retries",
              "duration", "error"),
    "actors": ("actor_id", "class_name", "name", "state", "node_id", "pid", "restarts",
               "death_cause"),
    "objects": ("object_id", "size", "node_id", "location", "owner", "ref_count"),
    "nodes": ("node_id", "address", "state", "is_head", "control_role", "store_used",
              "store_capacity", "spilled_bytes"),
}


def _cell(row: dict, column: str) -> str:
    if column == "duration":
        start, end = row.get("started_at"), row.get("finished_at")
        if start is None:
            return "-"
        return f"{(end if end is not None else time.time()) - start:.3f}s"
    value = row.get(column)
    if value is None:
        return "-"
    text = str(value)
    if column in ("error", "death_cause"):
        text = text.strip().splitlines()[-1] if text.strip() else text
        return text[:80]
    return text


def format_rows(kind: str, rows: list) -> str:
    columns = _COLUMNS[kind]
    table = [tuple(c.upper() for c in columns)]
    table += [tuple(_cell(row, c) for c in columns) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
             for line in table]
    lines.append(f"{len(rows)} {kind}")
    return "\n".join(lines)


def format_summary(counts: dict) -> str:
    states = sorted({state for by_state in counts.values() for state in by_state})
    table = [("NAME", *states, "TOTAL")]
    for name in sorted(counts):
        by_state = counts[name]
        table.append((name, *(str(by_state.get(s, 0)) for s in states),
                      str(sum(by_state.values()))))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in table)
