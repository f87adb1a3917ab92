"""Warm segments (lightray.store.pool): freed segments kept for the next pull
or restore, but never while anyone can still read them.

Real shared-memory files; "someone maps it" is a real mapping, in this
process or in another one.
"""
import mmap
import os
import subprocess
import sys

import pytest

from lightray.store import pool, shm
from lightray.store.spill import copy_file_to_segment
from lightray.store.transfer import ChunkWriter

MB = 1 << 20
LIMIT = 1 << 30


@pytest.fixture
def prefix():
    name = f"lr_pooltest{os.getpid()}_"
    yield name
    shm.unlink_all(name)


def segment(prefix, tag, size, fill=1):
    name = f"{prefix}{tag}"
    fd = shm.open_segment(name, os.O_CREAT | os.O_EXCL | os.O_RDWR)
    os.ftruncate(fd, size)
    os.pwrite(fd, bytes([fill]) * size, 0)
    os.close(fd)
    return name


def names(prefix):
    return sorted(shm.list_segments(prefix))


def wanted_pool(prefix, now=100.0):
    """A pool that has just been asked for a segment (so it keeps freed ones)."""
    warm = pool.WarmPool(prefix)
    assert warm.take(MB, now) is None
    return warm


def test_a_freed_segment_nobody_maps_is_kept_and_handed_to_the_next_write(prefix):
    warm = wanted_pool(prefix)
    freed = segment(prefix, "a", 2 * MB)
    warm.release(freed, LIMIT, 101.0)
    assert warm.bytes == 2 * MB
    assert not os.path.exists(f"/dev/shm/{freed}")    # only its pool name is left
    taken = warm.take(2 * MB, 102.0)
    assert taken is not None and warm.bytes == 0
    assert names(prefix) == [taken]


def test_a_segment_still_mapped_here_is_unlinked_and_the_mapping_keeps_its_bytes(prefix):
    warm = wanted_pool(prefix)
    freed = segment(prefix, "a", 2 * MB, fill=7)
    fd = shm.open_segment(freed, os.O_RDONLY)
    view = mmap.mmap(fd, 2 * MB, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    os.close(fd)                     # the mapping alone keeps it in use
    warm.release(freed, LIMIT, 101.0)
    assert warm.bytes == 0 and names(prefix) == []
    assert warm.take(2 * MB, 102.0) is None
    assert view[0] == 7 and view[2 * MB - 1] == 7
    view.close()


def test_a_segment_mapped_by_another_process_is_never_written_over(prefix, tmp_path):
    warm = wanted_pool(prefix)
    freed = segment(prefix, "a", 2 * MB, fill=7)
    reader = subprocess.Popen(
        [sys.executable, "-c", f"""
import mmap, os, sys
fd = os.open("/dev/shm/{freed}", os.O_RDONLY)
view = mmap.mmap(fd, {2 * MB}, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
os.close(fd)
print("mapped", flush=True)
sys.stdin.readline()
print(view[0], view[{2 * MB - 1}], flush=True)
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "mapped"
        warm.release(freed, LIMIT, 101.0)
        assert warm.bytes == 0 and names(prefix) == []
        # A new object of the same size is written: it must not land in the reader's pages.
        spill_file = tmp_path / "spilled"
        spill_file.write_bytes(bytes([9]) * (2 * MB))
        copy_file_to_segment(str(spill_file), (f"{prefix}b", 2 * MB, 0, ()),
                             warm.take(2 * MB, 102.0))
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().split() == ["7", "7"]
    finally:
        reader.kill()
        reader.wait()


def test_without_recent_demand_freed_segments_are_unlinked(prefix):
    warm = pool.WarmPool(prefix)          # never asked for one
    warm.release(segment(prefix, "a", 2 * MB), LIMIT, 100.0)
    assert warm.bytes == 0 and names(prefix) == []
    warm = wanted_pool(prefix, now=100.0)
    warm.release(segment(prefix, "b", 2 * MB), LIMIT, 100.0 + pool.DEMAND_SECONDS + 1)
    assert warm.bytes == 0 and names(prefix) == []


def test_small_segments_and_segments_beyond_the_limit_are_unlinked(prefix):
    warm = wanted_pool(prefix)
    warm.release(segment(prefix, "small", pool.MIN_BYTES // 2), LIMIT, 101.0)
    warm.release(segment(prefix, "big", 4 * MB), 3 * MB, 101.0)
    assert warm.bytes == 0 and names(prefix) == []


def test_trim_unlinks_the_oldest_until_the_pool_fits_and_expire_the_idle(prefix):
    warm = wanted_pool(prefix)
    warm.release(segment(prefix, "a", 2 * MB), LIMIT, 101.0)
    warm.release(segment(prefix, "b", 3 * MB), LIMIT, 102.0)
    warm.release(segment(prefix, "c", 4 * MB), LIMIT, 103.0)
    warm.trim(8 * MB)                      # 9 MB warm: the oldest (2 MB) goes
    assert warm.bytes == 7 * MB and len(names(prefix)) == 2
    warm.expire(102.5 + pool.IDLE_SECONDS)  # b idle too long, c not yet
    assert warm.bytes == 4 * MB and len(names(prefix)) == 1
    warm.trim(-MB)                         # reservations beyond the capacity: all go
    assert warm.bytes == 0 and names(prefix) == []
    warm.trim(-MB)
    warm.release(segment(prefix, "d", 2 * MB), LIMIT, 103.0)
    warm.clear()
    assert warm.bytes == 0 and names(prefix) == []


def test_take_prefers_the_smallest_segment_large_enough_else_the_largest(prefix):
    warm = wanted_pool(prefix)
    for tag, size in (("a", 2 * MB), ("b", 8 * MB), ("c", 4 * MB)):
        warm.release(segment(prefix, tag, size), LIMIT, 101.0)
    sizes = {name: os.stat(f"/dev/shm/{name}").st_size for name in names(prefix)}
    assert sizes[warm.take(3 * MB, 102.0)] == 4 * MB
    assert sizes[warm.take(16 * MB, 102.0)] == 8 * MB
    assert warm.bytes == 2 * MB


def test_a_pull_writes_into_the_warm_segment_and_gets_its_final_name(prefix):
    warm = wanted_pool(prefix)
    warm.release(segment(prefix, "old", 4 * MB, fill=3), LIMIT, 101.0)
    writer = ChunkWriter()
    final = f"{prefix}new"
    writer.open(b"id", final, 2 * MB, warm.take(2 * MB, 102.0))
    assert not writer.write(b"id", 0, bytes([5]) * MB)
    assert writer.write(b"id", MB, bytes([6]) * MB)
    assert names(prefix) == [final]
    assert os.stat(f"/dev/shm/{final}").st_size == 2 * MB   # the rest was given back
    with open(f"/dev/shm/{final}", "rb") as f:
        data = f.read()
    assert data == bytes([5]) * MB + bytes([6]) * MB


def test_a_restore_writes_into_the_warm_segment(prefix, tmp_path):
    warm = wanted_pool(prefix)
    warm.release(segment(prefix, "old", 2 * MB, fill=3), LIMIT, 101.0)
    spill_file = tmp_path / "spilled"
    spill_file.write_bytes(bytes([8]) * MB)
    final = f"{prefix}restored"
    copy_file_to_segment(str(spill_file), (final, MB, 0, ()), warm.take(MB, 102.0))
    assert names(prefix) == [final]
    with open(f"/dev/shm/{final}", "rb") as f:
        assert f.read() == bytes([8]) * MB
