"""The memory monitor: before the kernel's OOM killer acts, kill the newest retriable task.

    every LIGHTRAY_MEMORY_MONITOR_INTERVAL_S (250 ms), in the agent's loop:
      sample ──▶ (used, total): the node as the OOM killer sees it (its cgroup
                 where one has a limit, else RAM: lightray.memory_limits), or,
                 with LIGHTRAY_MEMORY_LIMIT_BYTES, the agent's own processes
                 against that budget
      used > threshold × total, and no kill of ours still pending?
        ──▶ choose_victim(running tasks) ──▶ worker_pool.oom_kills[pid] = why; Kill(pid)
    the worker exits ──▶ WorkerPool: the task waits (WAITING), retried after
                 backoff_seconds(attempt) (retry_after_oom), or OutOfMemoryError
    a worker dies of SIGKILL while the cgroup's oom_kill count rose
        ──▶ the kernel's OOM killer did it: the same path, named so

Who may be killed: only workers running a task, never a driver or the agent.
The newest retriable task goes first (it has done the least work, and will
run again); then tasks on their last attempt; actors only when nothing else
is left (their state is lost; they restart per max_restarts). A worker lent
to a driver ranks with the last attempts: whether it runs a task, and with
what retries, only its driver knows. "Newest" is the order in which ticks
first saw each task running.

The choices (``choose_victim``, ``over_threshold``, ``backoff_seconds``,
``RunningOrder``) are pure; ``MemoryMonitor`` does the sampling (psutil,
cgroup files) and runs in the agent's thread (lightray.agent.server).
"""
from __future__ import annotations

import os
from typing import NamedTuple

from .. import config, memory_limits
from .. import task_spec as ts
from ..states import DEAD, DISPATCHED

RETRIABLE, LAST_ATTEMPT, ACTOR = 0, 1, 2     # kill order: lowest first
BACKOFF_BASE = 0.5           # seconds before the first retry of a task killed for memory
BACKOFF_MAX = 8.0


class Candidate(NamedTuple):
    pid: int
    name: str                # the task's function, or the actor's class
    rank: int                # RETRIABLE, LAST_ATTEMPT or ACTOR
    started: int             # larger: seen running later


def choose_victim(candidates) -> Candidate | None:
    """The one to kill: lowest rank, and of those the most recently started."""
    best = None
    for candidate in candidates:
        if best is None or (candidate.rank, -candidate.started) < (best.rank, -best.started):
            best = candidate
    return best


def over_threshold(used: int, total: int, threshold: float) -> bool:
    return total > 0 and used > threshold * total


def backoff_seconds(attempt: int) -> float:
    """Wait before the attempt-th retry (1, 2, ...) of a task killed for memory."""
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, attempt - 1))


class RunningOrder:
    """The order in which tasks were first seen running, per worker."""

    __slots__ = ("_seen", "_counter")

    def __init__(self):
        self._seen: dict = {}       # worker id -> (task id or actor, order)
        self._counter = 0

    def candidates(self, workers: dict) -> list:
        """Workers running a task (or an actor) now, as Candidates."""
        found = []
        seen = {}
        for worker_id, worker in workers.items():
            if worker.state == DEAD or not worker.pid:
                continue
            if worker.actor is not None:
                key, name, rank = "actor", worker.actor.spec[ts.FUNCTION_NAME], ACTOR
            elif worker.started and worker.queue and worker.queue[0].state == DISPATCHED:
                task = worker.queue[0]
                key, name = task.task_id, task.spec[ts.FUNCTION_NAME]
                rank = RETRIABLE if task.retries_left > 0 else LAST_ATTEMPT
            elif worker.lessee is not None:
                # Lent to a driver: the agent cannot tell whether a task runs
                # there or has retries left (the driver retries it, if so).
                key, name, rank = "lease", "a task submitted directly", LAST_ATTEMPT
            else:
                continue   # idle, or starting
            previous = self._seen.get(worker_id)
            if previous is not None and previous[0] == key:
                order = previous[1]
            else:
                self._counter += 1
                order = self._counter
            seen[worker_id] = (key, order)
            found.append(Candidate(worker.pid, name, rank, order))
        self._seen = seen
        return found


class MemoryMonitor:
    """Samples memory and kills for the agent (its thread only)."""

    def __init__(self, state, threshold: float | None = None, budget: int | None = None,
                 interval: float | None = None, cgroup_root: str = memory_limits.CGROUP_ROOT,
                 proc_cgroup: str = memory_limits.PROC_CGROUP):
        self.state = state                 # lightray.agent.state.AgentState
        self.threshold = config.memory_usage_threshold() if threshold is None else threshold
        self.budget = config.memory_limit_bytes() if budget is None else budget
        self.interval = config.memory_monitor_interval() if interval is None else interval
        self.cgroup_root = cgroup_root
        self.proc_cgroup = proc_cgroup
        self.order = RunningOrder()
        self.delayed: list = []            # (when, task): retries waiting for their backoff
        self.pending_kill = None           # pid killed by us and not yet reaped
        self.oom_kill_count = self._kernel_oom_kills()
        self.last_sample = (0, 0)          # (used, total) at the last tick
        self.kills = 0

    # ---------------------------------------------------------- sampling

    def _kernel_oom_kills(self):
        return memory_limits.read_memory_limit(self.cgroup_root, self.proc_cgroup).oom_kills

    def _rss(self, pid: int) -> int:
        import psutil
        try:
            return psutil.Process(pid).memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            return 0

    def sample(self) -> tuple:
        """(bytes used, bytes there are)."""
        if self.budget is not None:
            pids = [os.getpid()] + [w.pid for w in self.state.workers.values() if w.pid]
            return sum(self._rss(pid) for pid in pids), self.budget
        return memory_limits.node_memory_usage(self.cgroup_root, self.proc_cgroup)

    # ---------------------------------------------------------- the tick

    def tick(self, now: float) -> None:
        """Bring back retries whose backoff is over; kill if memory runs short."""
        pool = self.state.worker_pool
        if pool.oom_retries:
            for task in pool.oom_retries:
                attempt = task.spec[ts.MAX_RETRIES] - task.retries_left
                self.delayed.append((now + backoff_seconds(attempt), task))
            pool.oom_retries.clear()
        if self.delayed:
            due = [task for when, task in self.delayed if when <= now]
            self.delayed = [(when, task) for when, task in self.delayed if when > now]
            for task in due:
                pool.retry_after_oom(task)
        if self.interval <= 0:
            return
        if self.pending_kill is not None and self.pending_kill in pool.workers_by_pid:
            return   # the last one we killed still holds its memory
        self.pending_kill = None
        candidates = self.order.candidates(self.state.workers)
        used, total = self.last_sample = self.sample()
        if not over_threshold(used, total, self.threshold) or not candidates:
            return
        victim = choose_victim(candidates)
        rss = self._rss(victim.pid)
        where = "the agent's processes" if self.budget is not None else "the node"
        pool.oom_kills[victim.pid] = (
            f"the memory monitor killed its worker (pid {victim.pid}), which used {rss} bytes "
            f"({rss / 2**20:.0f} MiB), when {where} used {used} of {total} bytes "
            f"({used / total:.0%}), above the threshold of {self.threshold:g} "
            f"({config.MEMORY_USAGE_THRESHOLD_ENV})")
        self.state.effects.kill.append(victim.pid)
        self.pending_kill = victim.pid
        self.kills += 1

    def on_worker_exit(self, pid: int, status: str) -> str:
        """How to describe a worker's exit: with why, if it was killed for memory
        (by us, or by the kernel: SIGKILL while the cgroup's oom_kill count rose)."""
        pool = self.state.worker_pool
        ours = pool.oom_kills.get(pid)
        if ours is not None:
            return f"{status}: out of memory: {ours}"
        if status.endswith("SIGKILL"):
            before, now = self.oom_kill_count, self._kernel_oom_kills()
            self.oom_kill_count = now
            if before is not None and now is not None and now > before:
                why = (f"the kernel's OOM killer killed its worker (pid {pid}): the memory "
                       f"cgroup's oom_kill count rose from {before} to {now}")
                if pid in pool.workers_by_pid:
                    pool.oom_kills[pid] = why
                return f"{status}: out of memory: {why}"
        return status

    def after_worker_exit(self, pid: int) -> None:
        """The state has seen the exit: forget a kill its task did not use
        (an actor's or leased worker's)."""
        self.state.worker_pool.oom_kills.pop(pid, None)
