"""A job's record: what `lightray job status|list` show, kept in the control store.

    submit_job ── PENDING ──▶ kv "lightray/jobs" / <job id> ◀── RUNNING (pid, node, start)
                                                           ◀── SUCCEEDED | FAILED | STOPPED
                                                               (end, exit code, message)

The records live under the reserved kv namespace ``lightray/jobs``, one key
per job id, as JSON (the last MiB of an ended job's output under
``lightray/job_logs``, for when its supervisor is gone): replicated like every lightray.kv value, so any node's
driver (or command line) reads them. Writes go through lightray.kv, from
the submitting driver (PENDING) and the job's supervisor (the rest).
"""
from __future__ import annotations

import json
import re

from .. import kv
from ..ids import random_hex

NAMESPACE = "lightray/jobs"       # kv namespace of the records (and the supervisors' actors)
LOG_NAMESPACE = "lightray/job_logs"   # the last KEPT_LOG_BYTES of each ended job's output
KEPT_LOG_BYTES = 1 << 20
PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED",
                                                "STOPPED")
TERMINAL = (SUCCEEDED, FAILED, STOPPED)
FIELDS = ("job_id", "entrypoint", "status", "message", "submitted_at", "start_time",
          "end_time", "exit_code", "node_id", "pid", "log_path", "working_dir")
_JOB_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class JobNotFoundError(ValueError):
    """No job of this cluster has the id asked about."""


def new_job_id() -> str:
    return f"lightray_job_{random_hex(6)}"


def check_job_id(job_id) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise ValueError(f"a job id is 1 to 100 letters, digits or '_.-', got {job_id!r:.120}")
    return job_id


def supervisor_name(job_id: str) -> str:
    """The name of the job's supervisor actor (in NAMESPACE)."""
    return f"supervisor:{job_id}"


def new_record(job_id: str, entrypoint: str, node_id: str, submitted_at: float,
               working_dir: str | None) -> dict:
    record = dict.fromkeys(FIELDS)
    record.update(job_id=job_id, entrypoint=entrypoint, status=PENDING, node_id=node_id,
                  submitted_at=submitted_at, working_dir=working_dir, message="")
    return record


def write(record: dict, *, only_new: bool = False) -> bool:
    """Store the record (only_new: unless a job of that id exists: False then)."""
    return kv.put(record["job_id"], json.dumps(record, sort_keys=True).encode(),
                  namespace=NAMESPACE, overwrite=not only_new)


def replace(old: dict, new: dict) -> bool:
    """new in place of old, if the store still holds old (compare-and-set)."""
    return kv.compare_and_set(old["job_id"], _encoded(old), _encoded(new), namespace=NAMESPACE)


def read(job_id: str, *, consistent: bool = True) -> dict:
    """The record of job_id; JobNotFoundError naming it when there is none."""
    check_job_id(job_id)
    value = kv.get(job_id, namespace=NAMESPACE, consistent=consistent)
    if value is None:
        raise JobNotFoundError(f"no job with id {job_id!r} in this cluster (lightray job list "
                               "shows the jobs it has)")
    return json.loads(value)


def read_all() -> list:
    """Every job's record, oldest submission first."""
    found = []
    for job_id in kv.list("", namespace=NAMESPACE, consistent=True):
        value = kv.get(job_id, namespace=NAMESPACE)
        if value is not None:
            found.append(json.loads(value))
    return sorted(found, key=lambda r: (r.get("submitted_at") or 0, r["job_id"]))


def keep_log_tail(job_id: str, start: int, tail: bytes) -> None:
    """An ended job's output from byte start on (its last KEPT_LOG_BYTES)."""
    kv.put(job_id, b"%d\n" % start + tail, namespace=LOG_NAMESPACE)


def log_tail(job_id: str):
    """(start, bytes) of the output kept for an ended job, or None."""
    value = kv.get(job_id, namespace=LOG_NAMESPACE)
    if value is None:
        return None
    start, _, tail = value.partition(b"\n")
    return int(start), tail


def _encoded(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True).encode()
