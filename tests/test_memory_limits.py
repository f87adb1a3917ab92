"""The memory this process may use (lightray.memory_limits): cgroup v2 and v1
limits read for this process's cgroup, the smallest on its path, and the
store's default capacity taken from them. Fake cgroup trees in tmp dirs,
plus a real v1 cgroup where this machine lets us make one."""
import os
import subprocess
import sys

import pytest

from lightray import memory_limits
from lightray.agent.cli import default_store_capacity
from lightray.config import OBJECT_STORE_FRACTION

GIB = 1 << 30
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def v2_tree(tmp_path, path="/user.slice/app", limits=None, current=1 * GIB,
            inactive_file=0, oom_kill=0):
    """A fake cgroup2 mount at tmp/cgroup and a /proc/self/cgroup naming path."""
    root = tmp_path / "cgroup"
    write(str(tmp_path / "proc_cgroup"), f"0::{path}\n")
    directory = os.path.join(root, path.strip("/"))
    for where, limit in (limits or {path: "max"}).items():
        write(os.path.join(root, where.strip("/"), "memory.max"), f"{limit}\n")
    write(os.path.join(directory, "memory.current"), f"{current}\n")
    write(os.path.join(directory, "memory.stat"), f"anon 5\ninactive_file {inactive_file}\n")
    write(os.path.join(directory, "memory.events"),
          f"low 0\nhigh 0\nmax 3\noom {oom_kill}\noom_kill {oom_kill}\n")
    return str(root), str(tmp_path / "proc_cgroup")


def v1_tree(tmp_path, path="/docker/abc", limit=2 * GIB, usage=GIB, oom_kill=0,
            parent_limit=None):
    root = tmp_path / "cgroup"
    write(str(tmp_path / "proc_cgroup"),
          f"12:cpu,cpuacct:{path}\n4:memory:{path}\n0::/\n")
    directory = os.path.join(root, "memory", path.strip("/"))
    write(os.path.join(directory, "memory.limit_in_bytes"), f"{limit}\n")
    write(os.path.join(directory, "memory.usage_in_bytes"), f"{usage}\n")
    write(os.path.join(directory, "memory.stat"), "cache 10\ntotal_inactive_file 0\n")
    write(os.path.join(directory, "memory.oom_control"),
          f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom_kill}\n")
    write(os.path.join(root, "memory", "memory.limit_in_bytes"),
          f"{parent_limit if parent_limit is not None else 9223372036854771712}\n")
    return str(root), str(tmp_path / "proc_cgroup")


def test_cgroup_v2_limit_usage_and_oom_kills_are_read_for_this_process(tmp_path):
    root, proc = v2_tree(tmp_path, limits={"/user.slice/app": str(2 * GIB)},
                         current=GIB + 4096, inactive_file=4096, oom_kill=2)
    found = memory_limits.read_memory_limit(root, proc)
    assert (found.limit, found.usage, found.oom_kills, found.version) == (2 * GIB, GIB, 2, 2)


def test_cgroup_v2_max_means_no_limit(tmp_path):
    root, proc = v2_tree(tmp_path)
    assert memory_limits.read_memory_limit(root, proc).limit is None


def test_cgroup_v2_limit_of_an_ancestor_bounds_the_process(tmp_path):
    root, proc = v2_tree(tmp_path, limits={"/user.slice/app": "max",
                                           "/user.slice": str(GIB // 2)})
    assert memory_limits.read_memory_limit(root, proc).limit == GIB // 2


def test_cgroup_v1_limit_usage_and_oom_kills_are_read_for_this_process(tmp_path):
    root, proc = v1_tree(tmp_path, limit=3 * GIB, usage=GIB, oom_kill=1)
    found = memory_limits.read_memory_limit(root, proc)
    assert (found.limit, found.usage, found.oom_kills, found.version) == (3 * GIB, GIB, 1, 1)


def test_cgroup_v1_unlimited_value_means_no_limit(tmp_path):
    root, proc = v1_tree(tmp_path, limit=9223372036854771712)
    assert memory_limits.read_memory_limit(root, proc).limit is None


def test_no_cgroup_at_all_means_no_limit(tmp_path):
    found = memory_limits.read_memory_limit(str(tmp_path / "none"), str(tmp_path / "none"))
    assert found.limit is None and found.version == 0


def test_store_default_capacity_is_a_share_of_the_cgroup_limit_not_of_ram(tmp_path, monkeypatch):
    monkeypatch.delenv("LIGHTRAY_OBJECT_STORE_MEMORY", raising=False)
    root, proc = v1_tree(tmp_path, limit=GIB)
    assert memory_limits.physical_memory() > GIB
    assert default_store_capacity(root, proc) == int(GIB * OBJECT_STORE_FRACTION)


def test_store_default_capacity_uses_ram_when_the_limit_is_above_it(tmp_path, monkeypatch):
    monkeypatch.delenv("LIGHTRAY_OBJECT_STORE_MEMORY", raising=False)
    ram = memory_limits.physical_memory()
    root, proc = v2_tree(tmp_path, limits={"/user.slice/app": str(ram * 4)})
    from lightray.store import shm
    expected = int(ram * OBJECT_STORE_FRACTION)
    free = shm.shm_free_bytes()
    assert default_store_capacity(root, proc) == (min(expected, free) if free else expected)


def test_node_memory_usage_is_the_cgroups_when_it_has_a_limit(tmp_path):
    root, proc = v2_tree(tmp_path, limits={"/user.slice/app": str(GIB)}, current=GIB // 4)
    assert memory_limits.node_memory_usage(root, proc) == (GIB // 4, GIB)


def _own_v1_memory_cgroup():
    """This process's v1 memory cgroup directory if we may make children in it."""
    _, v1 = memory_limits.cgroup_paths()
    base = os.path.join(memory_limits.CGROUP_ROOT, "memory")
    if v1 is None or not os.path.isdir(base):
        return None
    directory = os.path.join(base, v1.strip("/"))
    return directory if os.access(directory, os.W_OK) else None


@pytest.mark.skipif(_own_v1_memory_cgroup() is None,
                    reason="no writable cgroup v1 memory controller for this process here")
def test_a_process_inside_a_real_memory_cgroup_sizes_its_store_from_the_limit(monkeypatch):
    parent = _own_v1_memory_cgroup()
    child = os.path.join(parent, f"lightray-test-{os.getpid()}")
    os.mkdir(child)
    try:
        limit = 1 * GIB
        with open(os.path.join(child, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit))
        program = ("import os, sys\n"
                   f"open({os.path.join(child, 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
                   "from lightray import memory_limits\n"
                   "from lightray.agent.cli import default_store_capacity\n"
                   "print(memory_limits.read_memory_limit().limit, default_store_capacity())\n")
        env = dict(os.environ, PYTHONPATH=REPO)
        env.pop("LIGHTRAY_OBJECT_STORE_MEMORY", None)
        out = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        seen_limit, capacity = (int(x) for x in out.stdout.split())
        assert seen_limit == limit
        assert capacity == int(limit * OBJECT_STORE_FRACTION)
    finally:
        os.rmdir(child)
