"""lightray.jobs: submit a driver program to the cluster and follow it.

    import lightray, lightray.jobs as jobs
    lightray.init(address="127.0.0.1:6380")
    job_id = jobs.submit_job("python script.py", working_dir=".")
    jobs.get_job_status(job_id)        # "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"
    print(jobs.get_job_logs(job_id))   # its stdout and stderr so far
    for text in jobs.tail_job_logs(job_id): ...   # until it ends
    jobs.stop_job(job_id)              # SIGTERM, then SIGKILL its process group
    jobs.list_jobs()                   # every job's record, oldest first

The job runs on the node this driver is attached to (so on this host), as a
driver process of its own started by that node's supervisor actor
(lightray.jobs.supervisor): its cwd the working_dir shipped through the
object store, ``lightray.init()`` inside attaches to the cluster, and its
runtime_env is that of every task and actor it submits. Records are read
from the control store (lightray.jobs.records): any node sees every job.
"""
from __future__ import annotations

import os
import shlex
import time
from typing import Iterator

from .. import api, exceptions
from ..config import runtime_env_install_timeout
from ..runtime_context import state as context_state
from ..runtime_env import parse as parse_runtime_env
from ..scheduling import NodeAffinity
from . import records
from .records import JobNotFoundError
from .supervisor import JobSupervisor

CALL_TIMEOUT = 60.0      # seconds a call to a job's supervisor may take
STOP_TIMEOUT = 10.0      # seconds stop_job waits after SIGTERM before SIGKILL
FOLLOW_INTERVAL = 0.2    # seconds between log reads while following

__all__ = ["JobNotFoundError", "get_job_info", "get_job_logs", "get_job_status", "list_jobs",
           "stop_job", "submit_job", "tail_job_logs"]


def submit_job(entrypoint, *, working_dir=None, runtime_env: dict | None = None,
               job_id: str | None = None) -> str:
    """Start entrypoint (a command line: a str, split as a shell would, or a
    list of words) as a job; its id. working_dir: a local directory or .zip
    (the same as runtime_env={"working_dir": ...}, which it overrides)."""
    argv = _argv(entrypoint)
    env = dict(runtime_env or {})
    if runtime_env is not None and not isinstance(runtime_env, dict):
        raise TypeError(f"submit_job: runtime_env must be a dict, got "
                        f"{type(runtime_env).__name__}")
    if working_dir is not None:
        env["working_dir"] = working_dir
    env = _absolute_paths(env)
    parse_runtime_env(env or None, "submit_job(runtime_env=...)")   # errors before anything runs
    job_id = records.new_job_id() if job_id is None else records.check_job_id(job_id)
    node_id = _driver_node()
    record = records.new_record(job_id, shlex.join(argv), node_id, time.time(),
                                env.get("working_dir"))
    if not records.write(record, only_new=True):
        raise ValueError(f"submit_job: a job with id {job_id!r} exists already")
    options = dict(name=records.supervisor_name(job_id), namespace=records.NAMESPACE,
                   lifetime="detached", num_cpus=0,
                   scheduling_strategy=NodeAffinity(node_id))
    if env:
        options["runtime_env"] = env
    try:
        supervisor = api.remote(JobSupervisor).options(**options).remote(record, argv,
                                                                         env or None)
        # (Its runtime_env is set up first: pip/uv may install for a while.)
        api.get(supervisor.start.remote(),
                timeout=CALL_TIMEOUT + runtime_env_install_timeout())
    except ValueError as error:           # the entrypoint could not start (record: FAILED)
        raise ValueError(str(getattr(error, "cause", None) or error)) from None
    except exceptions.LightrayError as error:
        _fail(record, f"the job's supervisor could not start it: {error}")
        raise
    return job_id


def get_job_info(job_id: str) -> dict:
    """The job's record (records.FIELDS); JobNotFoundError for an unknown id."""
    record = records.read(job_id)
    if record["status"] == records.RUNNING and _supervisor(job_id) is None:
        # Its node (or its supervisor's worker) died: the driver went with it.
        failed = _failed(record, "the job's supervisor is gone (its node or worker died)")
        if records.replace(record, failed):
            return failed
        return records.read(job_id)
    return record


def get_job_status(job_id: str) -> str:
    return get_job_info(job_id)["status"]


def list_jobs() -> list:
    return [get_job_info(r["job_id"]) if r["status"] == records.RUNNING else r
            for r in records.read_all()]


def get_job_logs(job_id: str) -> str:
    """Everything the job's driver wrote to stdout and stderr so far: from its
    supervisor; once that is gone, from the log file on this host, else from
    the last MiB the control store keeps of an ended job's output."""
    chunks, offset = [], 0
    supervisor = _supervisor(job_id)
    while True:
        data, offset, _ = _read_log(job_id, offset, supervisor)
        if not data:
            return b"".join(chunks).decode("utf-8", errors="replace")
        chunks.append(data)


def tail_job_logs(job_id: str, timeout: float | None = None) -> Iterator[str]:
    """The job's output as it is written, until the job ends (or timeout
    seconds pass: GetTimeoutError)."""
    supervisor = _supervisor(job_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    offset = 0
    while True:
        data, offset, finished = _read_log(job_id, offset, supervisor)
        if data:
            yield data.decode("utf-8", errors="replace")
            continue
        if finished:
            return
        if deadline is not None and time.monotonic() > deadline:
            raise exceptions.GetTimeoutError(f"job {job_id} still running after {timeout:g} s")
        time.sleep(FOLLOW_INTERVAL)
        if supervisor is None:
            supervisor = _supervisor(job_id)   # PENDING: not made yet


def stop_job(job_id: str, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the job (SIGTERM to its process group, SIGKILL after timeout
    seconds); False if it had ended already."""
    if type(timeout) not in (int, float) or timeout < 0:
        raise ValueError(f"stop_job: timeout must be a number of seconds >= 0, got {timeout!r}")
    record = get_job_info(job_id)
    if record["status"] == records.PENDING:
        # Not started: marked STOPPED, its supervisor will not start it
        # (unless it started just now: then it is stopped as a running one).
        if records.replace(record, _failed(record, "stopped before it started",
                                           records.STOPPED)):
            return True
        record = get_job_info(job_id)
    if record["status"] in records.TERMINAL:
        return False
    supervisor = _supervisor(job_id)
    if supervisor is None:
        return False           # gone since (get_job_info marks the job FAILED)
    return api.get(supervisor.stop.remote(float(timeout)), timeout=timeout + CALL_TIMEOUT)


# ------------------------------------------------------------------ helpers

def _argv(entrypoint) -> list:
    if isinstance(entrypoint, str):
        try:
            argv = shlex.split(entrypoint)
        except ValueError as error:
            raise ValueError(f"submit_job: cannot split the entrypoint {entrypoint!r}: "
                             f"{error}") from None
    elif isinstance(entrypoint, (list, tuple)) and all(isinstance(w, str) for w in entrypoint):
        argv = list(entrypoint)
    else:
        raise TypeError(f"submit_job: the entrypoint must be a command line (a str or a list "
                        f"of str), got {entrypoint!r:.120}")
    if not argv or not argv[0]:
        raise ValueError("submit_job: no entrypoint given: name the command the job runs, "
                         "e.g. \"python script.py\"")
    return argv


def _absolute_paths(env: dict) -> dict:
    """Paths made absolute: the job's tasks get them from another cwd."""
    env = dict(env)
    if isinstance(env.get("working_dir"), (str, os.PathLike)):
        env["working_dir"] = os.path.abspath(env["working_dir"])
    if isinstance(env.get("py_modules"), (list, tuple)):
        env["py_modules"] = [os.path.abspath(p) if isinstance(p, (str, os.PathLike)) else p
                             for p in env["py_modules"]]
    return env


def _driver_node() -> str:
    api.is_initialized() or api.init(address="auto")
    node_id = context_state.node_id
    if not node_id:
        node_id = api._client_for_submission().node_info.get("node_id", "")
    if not node_id:
        raise RuntimeError("submit_job: this driver's node is not known (local mode has no "
                           "agent to run jobs)")
    return node_id


def _supervisor(job_id: str):
    try:
        return api.get_actor(records.supervisor_name(job_id), namespace=records.NAMESPACE)
    except ValueError:
        return None


def _read_log(job_id: str, offset: int, supervisor) -> tuple:
    """(bytes of the job's log from offset, the offset after them, whether the
    job has ended and nothing more will come)."""
    if supervisor is not None:
        try:
            return api.get(supervisor.logs.remote(offset), timeout=CALL_TIMEOUT)
        except exceptions.ActorDiedError:
            pass       # it retired, or died, meanwhile: what it left
    record = get_job_info(job_id)
    ended = record["status"] in records.TERMINAL
    path = record.get("log_path")
    if path and os.path.isfile(path):          # the job ran on this host
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(records.KEPT_LOG_BYTES)
        return data, offset + len(data), ended and len(data) < records.KEPT_LOG_BYTES
    kept = records.log_tail(job_id)
    if kept is None:
        if not ended:
            return b"", offset, False          # PENDING: no output yet
        raise ValueError(f"the log of job {job_id!r} is gone: it was kept on node "
                         f"{record['node_id']}, whose agent stopped")
    start, tail = kept
    note = b""
    if offset < start:
        note = (b"[lightray: the first %d bytes of this log are kept only on node %s]\n"
                % (start, str(record["node_id"]).encode()))
        offset = start
    data = tail[offset - start:]
    return note + data, offset + len(data), True


def _failed(record: dict, why: str, status: str = records.FAILED) -> dict:
    return {**record, "status": status, "message": why, "end_time": time.time()}


def _fail(record: dict, why: str) -> None:
    try:
        records.replace(record, _failed(record, why))
    except exceptions.LightrayError:
        pass
