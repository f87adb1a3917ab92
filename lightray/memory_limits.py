"""How much memory this process may use: the cgroup's limit where one is set, else RAM.

    /proc/self/cgroup ──▶ this process's cgroup path (v2 "0::/path"; v1 "N:memory:/path")
    <root>/<path>/memory.max, memory.current, memory.events     (cgroup v2)
    <root>/memory/<path>/memory.limit_in_bytes, memory.usage_in_bytes,
                         memory.oom_control                      (cgroup v1)
    ──▶ MemoryLimit(limit, usage, oom_kills) ──▶ the store's default capacity,
                                                  the memory monitor (lightray.agent.memory_monitor)

In a container the kernel's OOM killer acts at the cgroup's limit, not at the
machine's RAM: a store sized from RAM would overcommit, and a monitor that
watched RAM would never see the pressure coming. A limit of "max" (v2) or
one near 2**63 (v1: "no limit") counts as none. The limit of a cgroup is
bounded by its ancestors' too, so the smallest limit on the path up to the
root is taken. Everything reads files under a root directory
(``/sys/fs/cgroup`` unless told otherwise) so tests can build fake trees.
"""
from __future__ import annotations

import os
from typing import NamedTuple

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"
_V1_UNLIMITED = 1 << 62      # v1 writes "no limit" as a page-aligned 2**63 - 1


class MemoryLimit(NamedTuple):
    limit: int | None        # bytes the cgroup may use; None: no limit set
    usage: int | None        # bytes it uses now (as the kernel counts them)
    oom_kills: int | None    # processes the kernel's OOM killer killed in it so far
    version: int             # 1 or 2 (0: no memory cgroup found)
    path: str                # its directory


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_keyed(path: str, key: str) -> int | None:
    """The value of key in a "key value" per line file (memory.events, oom_control)."""
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


def _minus_inactive_file(usage: int | None, stat_path: str, key: str) -> int | None:
    """The cgroup's usage without the page cache the kernel reclaims before
    it kills anyone (inactive file pages), as the OOM killer sees it."""
    if usage is None:
        return None
    inactive = _read_keyed(stat_path, key)
    return usage - inactive if inactive is not None and inactive <= usage else usage


def cgroup_paths(proc_cgroup: str = PROC_CGROUP) -> tuple:
    """(v2 path or None, v1 memory path or None) of this process's cgroup."""
    v2 = v1 = None
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(base: str, path: str) -> list:
    """base/path, then each parent directory of it up to base."""
    relative = path.strip("/")
    found = []
    while True:
        found.append(os.path.join(base, relative) if relative else base)
        if not relative:
            return found
        relative = os.path.dirname(relative)


def _smallest(values) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def read_memory_limit(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> MemoryLimit:
    """This process's memory cgroup: its limit (the smallest on its path),
    usage and OOM-kill count. v1 is read where its memory controller is
    mounted (root/memory), else v2 (root itself, or root/unified)."""
    v2_path, v1_path = cgroup_paths(proc_cgroup)
    v1_base = os.path.join(root, "memory")
    if v1_path is not None and os.path.isdir(v1_base):
        directory = os.path.join(v1_base, v1_path.strip("/"))
        limits = [_read_int(os.path.join(d, "memory.limit_in_bytes"))
                  for d in _ancestors(v1_base, v1_path)]
        limit = _smallest(v for v in limits if v is None or v < _V1_UNLIMITED)
        usage = _minus_inactive_file(_read_int(os.path.join(directory, "memory.usage_in_bytes")),
                                     os.path.join(directory, "memory.stat"), "total_inactive_file")
        return MemoryLimit(limit, usage, _read_keyed(os.path.join(directory, "memory.oom_control"), "oom_kill"),
                           1, directory)
    if v2_path is not None:
        for base in (root, os.path.join(root, "unified")):
            directory = os.path.join(base, v2_path.strip("/"))
            if os.path.exists(os.path.join(directory, "memory.current")) or os.path.exists(
                    os.path.join(directory, "memory.max")):
                limit = _smallest(_read_int(os.path.join(d, "memory.max"))
                                  for d in _ancestors(base, v2_path))
                usage = _minus_inactive_file(
                    _read_int(os.path.join(directory, "memory.current")),
                    os.path.join(directory, "memory.stat"), "inactive_file")
                return MemoryLimit(
                    limit, usage,
                    _read_keyed(os.path.join(directory, "memory.events"), "oom_kill"),
                    2, directory)
    return MemoryLimit(None, None, None, 0, "")


def prefer_for_oom_killer() -> None:
    """Ask the kernel's OOM killer to pick this process first (a worker: its
    task can be retried; the agent and drivers keep their default score)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass   # not Linux, or not allowed: the default score stays


def physical_memory() -> int:
    """Bytes of RAM on this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_available_to_us(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> int:
    """Bytes this process may use: min(cgroup limit, RAM)."""
    limit = read_memory_limit(root, proc_cgroup).limit
    ram = physical_memory()
    return ram if limit is None else min(limit, ram)


def node_memory_usage(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> tuple:
    """(bytes used, bytes there are) for this node as the OOM killer sees it:
    the cgroup's usage and limit where a limit is set, else the machine's
    used (total - available) and total RAM."""
    import psutil
    cgroup = read_memory_limit(root, proc_cgroup)
    memory = psutil.virtual_memory()
    if cgroup.limit is not None and cgroup.limit < memory.total and cgroup.usage is not None:
        return cgroup.usage, cgroup.limit
    return memory.total - memory.available, memory.total
