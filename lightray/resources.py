"""Resource requests and the pool a node schedules them from.

Amounts are kept in integer units of 1/10,000 so that fractional requests
(num_cpus=0.1 ten times) add up exactly, as in Ray.
"""
from __future__ import annotations

import math
import os

UNIT = 10_000
CPU, GPU = "CPU", "GPU"


def to_units(amount: float) -> int:
    return int(round(amount * UNIT))


def from_units(units: int) -> float:
    return units / UNIT


def detect_num_cpus() -> int:
    """CPUs this process may use: its affinity mask, bounded by a cgroup quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.floor(quota)))
    return max(1, count)


def _cgroup_cpu_quota():
    try:  # cgroup v2
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        if quota > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def validate_amount(name: str, amount) -> float:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise ValueError(f"resource {name!r} must be a number, got {amount!r}")
    if amount < 0 or amount != amount or amount == float("inf"):
        raise ValueError(f"resource {name!r} must be a finite non-negative number, got {amount!r}")
    return float(amount)


def make_request(num_cpus, num_gpus, resources) -> dict:
    """The canonical request dict {name: amount} with zero entries dropped."""
    request = {}
    if num_cpus is not None:
        request[CPU] = validate_amount("num_cpus", num_cpus)
    if num_gpus is not None:
        gpus = validate_amount("num_gpus", num_gpus)
        if gpus > 1 and gpus != int(gpus):
            raise ValueError(f"num_gpus above 1 must be a whole number, got {num_gpus!r}")
        request[GPU] = gpus
    for name, amount in (resources or {}).items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"resource names must be non-empty strings, got {name!r}")
        if name in (CPU, GPU):
            raise ValueError(f"use num_cpus/num_gpus instead of resources={{{name!r}: ...}}")
        request[name] = validate_amount(name, amount)
    return {k: v for k, v in request.items() if v > 0}


def shape_of(request: dict) -> tuple:
    return tuple(sorted(request.items()))


class Allocation:
    __slots__ = ("units", "gpu_ids", "gpu_share", "cpu_released")

    def __init__(self, units: dict, gpu_ids: list, gpu_share: int):
        self.units = units              # name -> units held
        self.gpu_ids = gpu_ids          # logical GPU ids assigned
        self.gpu_share = gpu_share      # units taken from each of gpu_ids
        self.cpu_released = False       # CPU handed back while the task blocks


class ResourcePool:
    """Total and available resources of one node; pure bookkeeping."""

    def __init__(self, total: dict):
        self.total = {k: to_units(v) for k, v in total.items() if v > 0}
        self.available = dict(self.total)
        self.gpu_free = [UNIT] * int(total.get(GPU, 0))

    def unsatisfiable(self, request: dict):
        """Name of a resource the request can never get here, or None."""
        for name, amount in request.items():
            if to_units(amount) > self.total.get(name, 0):
                return name
        return None

    def try_acquire(self, request: dict):
        units = {name: to_units(amount) for name, amount in request.items()}
        available = self.available
        for name, need in units.items():
            if available.get(name, 0) < need:
                return None
        gpu_ids, share = [], 0
        need_gpu = units.get(GPU, 0)
        if need_gpu:
            if need_gpu < UNIT:
                share = need_gpu
                fit = [i for i, free in enumerate(self.gpu_free) if free >= need_gpu]
                if not fit:
                    return None
                # Best fit: the fullest GPU that still has room.
                gpu_ids = [min(fit, key=lambda i: self.gpu_free[i])]
            else:
                share = UNIT
                whole = [i for i, free in enumerate(self.gpu_free) if free == UNIT]
                count = need_gpu // UNIT
                if len(whole) < count:
                    return None
                gpu_ids = whole[:count]
            for i in gpu_ids:
                self.gpu_free[i] -= share
        for name, need in units.items():
            available[name] -= need
        return Allocation(units, gpu_ids, share)

    def release(self, allocation: Allocation) -> None:
        for name, held in allocation.units.items():
            if name == CPU and allocation.cpu_released:
                continue
            self.available[name] += held
        for i in allocation.gpu_ids:
            self.gpu_free[i] += allocation.gpu_share

    def release_cpu(self, allocation: Allocation) -> None:
        cpu = allocation.units.get(CPU, 0)
        if cpu and not allocation.cpu_released:
            allocation.cpu_released = True
            self.available[CPU] += cpu

    def reacquire_cpu(self, allocation: Allocation) -> None:
        # May overcommit for a moment, as Ray does: the unblocked task must go on.
        cpu = allocation.units.get(CPU, 0)
        if cpu and allocation.cpu_released:
            allocation.cpu_released = False
            self.available[CPU] -= cpu

    def as_floats(self, which: str) -> dict:
        units = self.total if which == "total" else self.available
        return {k: from_units(v) for k, v in units.items()}
