"""The job's supervisor: an actor on the submitting node that runs the job's driver.

    submit_job ──creates──▶ JobSupervisor (detached actor, 0 CPUs, pinned to the node;
                            its runtime_env applied: cwd = the shipped working_dir)
        start() ──Popen──▶ the entrypoint, its own process group (session), cwd the
                           working dir, LIGHTRAY_ADDRESS = this node's agent, output
                           (stdout + stderr) ──▶ <session dir>/jobs/<job id>.log
                           record ──▶ RUNNING
        waiter thread: the driver exits ──▶ record SUCCEEDED (0) | FAILED (else) |
                                            STOPPED (after stop())
        logs(offset)   the log's bytes from offset (any node asks through the actor)
        stop(timeout)  SIGTERM to the process group, SIGKILL after timeout

The driver process dies with the supervisor's worker (PR_SET_PDEATHSIG), so a
stopped agent leaves no job running. When the job has ended, the supervisor
keeps the log's last MiB in the control store, serves the log for
LIGHTRAY_JOB_SUPERVISOR_LINGER seconds more (60), then exits.
"""
from __future__ import annotations

import ctypes
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

from .. import api, config
from ..actor import exit_actor
from ..discovery import agent_at
from ..log import get_logger
from ..runtime import client_for_submission
from ..runtime_context import state as context_state
from ..runtime_env import cache_root
from . import records

_log = get_logger("jobs")

LOG_CHUNK = 1 << 20        # bytes of log one logs() call returns at most
_PR_SET_PDEATHSIG = 1
_PYTHONS = ("python", "python3", os.path.basename(sys.executable))


class JobSupervisor:
    """Runs one job's driver; see the module docstring."""

    def __init__(self, record: dict, argv: list, runtime_env: dict | None):
        self.record = dict(record)
        self.argv = list(argv)
        self.runtime_env = runtime_env     # as given (validated), for the driver's tasks
        self.process = None
        self.stopping = False
        self.done = threading.Event()
        session_dir = os.path.dirname(client_for_submission().address[len("ipc://"):])
        log_dir = os.path.join(session_dir, "jobs")
        os.makedirs(log_dir, mode=0o700, exist_ok=True)
        self.log_path = os.path.join(log_dir, f"{record['job_id']}.log")

    def start(self) -> dict:
        """Start the driver; its RUNNING record. ValueError when the entrypoint's
        program cannot be started (the record says FAILED then)."""
        if self.process is not None:
            return self.record
        current = records.read(self.record["job_id"])
        if current["status"] != records.PENDING:
            # Stopped, or given up by its submitter (which waited too long), meanwhile.
            self.record = current
            self.done.set()
            threading.Thread(target=self._retire, name="lightray-job-retire",
                             daemon=True).start()
            return current
        env = self._driver_env()
        argv = list(self.argv)
        if argv[0] in _PYTHONS:
            argv[0] = sys.executable   # the interpreter the cluster runs (lightray in it)
        libc = _libc()
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                argv, cwd=os.getcwd(), env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=(lambda: libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))
                if libc is not None else None)
        except OSError as error:
            log.close()
            why = (f"the entrypoint's program {self.argv[0]!r} was not found"
                   if isinstance(error, FileNotFoundError)
                   else f"the entrypoint could not be started: {error}")
            self._finish(None, why)
            raise ValueError(f"job {self.record['job_id']}: {why} "
                             f"(entrypoint {shlex.join(self.argv)!r})") from None
        log.close()
        self.record.update(status=records.RUNNING, start_time=time.time(),
                           pid=self.process.pid, log_path=self.log_path,
                           node_id=context_state.node_id)
        records.write(self.record)
        threading.Thread(target=self._wait, name="lightray-job-waiter", daemon=True).start()
        return self.record

    def _driver_env(self) -> dict:
        env = dict(os.environ)
        client = client_for_submission()
        try:
            address = agent_at(client.address).get("address") or client.address
        except (ConnectionError, ValueError):
            address = client.address
        env[config.ADDRESS_ENV] = address
        env[config.JOB_ID_ENV] = self.record["job_id"]
        env["PYTHONUNBUFFERED"] = "1"      # output reaches the log (and --follow) as written
        # What this worker has on sys.path from the runtime_env (working_dir,
        # py_modules, pip packages) is importable in the driver too.
        paths = [p for p in sys.path if p and p.startswith(cache_root())]
        env["PYTHONPATH"] = os.pathsep.join(
            [os.getcwd(), *paths] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        if self.runtime_env:
            job_env = dict(self.runtime_env)
            if "working_dir" in job_env:
                job_env["working_dir"] = os.getcwd()   # the shipped copy (the same hash)
            env[config.JOB_RUNTIME_ENV_ENV] = json.dumps(job_env)
        else:
            env.pop(config.JOB_RUNTIME_ENV_ENV, None)
        return env

    def _wait(self) -> None:
        code = self.process.wait()
        if self.stopping:
            self._finish(code, "stopped by lightray job stop", records.STOPPED)
        elif code == 0:
            self._finish(code, "", records.SUCCEEDED)
        elif code < 0:
            self._finish(code, f"the driver was killed by signal {_signal_name(-code)}")
        else:
            self._finish(code, f"the driver exited with code {code}")

    def _finish(self, code, message: str, status: str = records.FAILED) -> None:
        job_id = self.record["job_id"]
        self.record.update(status=status, end_time=time.time(), exit_code=code,
                           message=message)
        try:
            self._keep_log_tail()
            records.write(self.record)
        except Exception as error:   # the record stays RUNNING; get_job_status says why
            _log.warning("job %s ended (%s) but its record could not be written: %s",
                         job_id, status, error)
        self.done.set()
        threading.Thread(target=self._retire, name="lightray-job-retire", daemon=True).start()

    def _keep_log_tail(self) -> None:
        try:
            size = os.path.getsize(self.log_path)
        except OSError:
            size = 0
        start = max(size - records.KEPT_LOG_BYTES, 0)
        data = b""
        if size:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                data = f.read(records.KEPT_LOG_BYTES)
        records.keep_log_tail(self.record["job_id"], start, data)

    def _retire(self) -> None:
        """Exit once followers had time to read the end of the log."""
        time.sleep(config.job_supervisor_linger())
        try:
            own = api.get_actor(records.supervisor_name(self.record["job_id"]),
                                namespace=records.NAMESPACE)
            own.exit.remote()
        except Exception as error:
            _log.warning("the supervisor of job %s could not retire: %s",
                         self.record["job_id"], error)

    def exit(self) -> None:
        exit_actor()

    def info(self) -> dict:
        return dict(self.record)

    def logs(self, offset: int = 0, limit: int = LOG_CHUNK) -> tuple:
        """(bytes of the log from offset, up to limit; the offset after them;
        whether the job has ended and nothing more will come)."""
        finished = self.done.is_set()   # before reading: what it wrote last is then read
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                data = f.read(limit)
        except FileNotFoundError:
            data = b""
        return data, offset + len(data), finished and len(data) < limit

    def stop(self, timeout: float) -> bool:
        """SIGTERM the job's process group, SIGKILL it after timeout seconds;
        False if the job had ended already."""
        if self.process is None or self.done.is_set():
            return False
        self.stopping = True
        group = self.process.pid          # start_new_session: its own group, same id
        _signal_group(group, signal.SIGTERM)
        if not self.done.wait(timeout):
            _signal_group(group, signal.SIGKILL)
            self.done.wait(10.0)
        else:
            _signal_group(group, signal.SIGKILL)   # what the driver left in its group
        return True


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
