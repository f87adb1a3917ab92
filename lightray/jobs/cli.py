"""``lightray job ...``: jobs from the command line (lightray.cli registers it).

    lightray job submit [--address ...] [--working-dir DIR] [--runtime-env-json JSON]
                        [--job-id ID] [--no-wait] -- COMMAND...
        start COMMAND as a job on the node at --address; print its id, then
        follow its output until it ends (exit status: 0 if it SUCCEEDED), or
        with --no-wait print the id and return
    lightray job status JOB_ID [--json]      its record: status, times, exit code, node
    lightray job logs JOB_ID [--follow]      its output (stdout and stderr) so far, or
                                             as it comes until it ends
    lightray job stop JOB_ID [--timeout S]   SIGTERM its process group, SIGKILL after S
    lightray job list [--json]               every job of the cluster

Every subcommand attaches to the cluster as a driver for its duration, with
the --address and --cluster-key every command takes (lightray.cli).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys

from .. import api
from . import records
from . import submission as jobs


def add_parser(sub, target: argparse.ArgumentParser) -> None:
    job = sub.add_parser("job", help="submit a driver program to a cluster and follow it")
    commands = job.add_subparsers(dest="job_command", metavar="{submit,status,logs,stop,list}")
    submit = commands.add_parser("submit", parents=[target],
                                 help="run a command as a job (after --)")
    submit.add_argument("--working-dir", metavar="DIR",
                        help="a directory or .zip shipped to the job's node: its cwd")
    submit.add_argument("--runtime-env-json", metavar="JSON",
                        help="the job's runtime_env as JSON (env_vars, py_modules, pip, uv)")
    submit.add_argument("--job-id", help="the job's id (default: a new one)")
    submit.add_argument("--no-wait", action="store_true",
                        help="print the job id and return at once")
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER,
                        help="-- COMMAND [ARG...]: what the job runs")
    status = commands.add_parser("status", parents=[target], help="a job's record")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true")
    logs = commands.add_parser("logs", parents=[target], help="a job's output")
    logs.add_argument("job_id")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="keep printing its output until it ends")
    stop = commands.add_parser("stop", parents=[target], help="stop a job")
    stop.add_argument("job_id")
    stop.add_argument("--timeout", type=float, default=jobs.STOP_TIMEOUT, metavar="SECONDS",
                      help="seconds between SIGTERM and SIGKILL "
                           f"(default {jobs.STOP_TIMEOUT:g})")
    listing = commands.add_parser("list", parents=[target], help="every job of the cluster")
    listing.add_argument("--json", action="store_true")
    job.set_defaults(job_parser=job)


def run(args, attach, error) -> int:
    """Carry out `lightray job ...`; attach(args) makes this process a driver of
    the cluster named, error(message) is the command line's user error."""
    if not args.job_command:
        args.job_parser.print_help()
        return 0
    if args.job_command == "submit":
        entrypoint = list(args.entrypoint)
        if entrypoint and entrypoint[0] == "--":
            entrypoint = entrypoint[1:]
        if not entrypoint:
            raise error("no entrypoint given: put the command after --, e.g. "
                        "lightray job submit --working-dir . -- python script.py")
        runtime_env = None
        if args.runtime_env_json is not None:
            try:
                runtime_env = json.loads(args.runtime_env_json)
            except ValueError as bad:
                raise error(f"--runtime-env-json is not JSON: {bad}") from None
            if not isinstance(runtime_env, dict):
                raise error("--runtime-env-json must be a JSON object, got "
                            f"{args.runtime_env_json!r:.80}")
    attach(args)
    try:
        if args.job_command == "submit":
            job_id = jobs.submit_job(entrypoint, working_dir=args.working_dir,
                                     runtime_env=runtime_env, job_id=args.job_id)
            print(f"submitted job {job_id}", flush=True)
            if args.no_wait:
                return 0
            return _follow(job_id)
        if args.job_command == "status":
            record = jobs.get_job_info(args.job_id)
            print(json.dumps(record, indent=2, sort_keys=True) if args.json
                  else format_record(record))
            return 0
        if args.job_command == "logs":
            if args.follow:
                return _follow(args.job_id, status=False)
            sys.stdout.write(jobs.get_job_logs(args.job_id))
            return 0
        if args.job_command == "stop":
            if jobs.stop_job(args.job_id, timeout=args.timeout):
                print(f"stopped job {args.job_id}")
            else:
                print(f"job {args.job_id} had ended already "
                      f"({jobs.get_job_status(args.job_id)})")
            return 0
        found = jobs.list_jobs()
        if args.json:
            print(json.dumps(found, indent=2, sort_keys=True))
        else:
            print(format_list(found))
        return 0
    except records.JobNotFoundError as bad:
        raise error(str(bad)) from None
    finally:
        api.shutdown()


def _follow(job_id: str, status: bool = True) -> int:
    for text in jobs.tail_job_logs(job_id):
        sys.stdout.write(text)
        sys.stdout.flush()
    record = jobs.get_job_info(job_id)
    if status:
        print(f"job {job_id} {record['status']}"
              + (f": {record['message']}" if record.get("message") else ""))
    return 0 if record["status"] == records.SUCCEEDED else 1


def format_record(record: dict) -> str:
    lines = [f"job {record['job_id']}: {record['status']}"
             + (f" ({record['message']})" if record.get("message") else "")]
    for field in ("entrypoint", "node_id", "pid", "exit_code", "working_dir", "log_path"):
        if record.get(field) is not None:
            lines.append(f"  {field:12} {record[field]}")
    for field in ("submitted_at", "start_time", "end_time"):
        if record.get(field):
            lines.append(f"  {field:12} {_when(record[field])}")
    return "\n".join(lines)


def format_list(found: list) -> str:
    if not found:
        return "no jobs"
    rows = [("JOB ID", "STATUS", "NODE", "SUBMITTED", "ENTRYPOINT")]
    rows += [(r["job_id"], r["status"], r.get("node_id") or "-", _when(r.get("submitted_at")),
              r.get("entrypoint") or "") for r in found]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row[:4], widths)),
                                row[4]]).rstrip() for row in rows)


def _when(stamp) -> str:
    if not stamp:
        return "-"
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")
