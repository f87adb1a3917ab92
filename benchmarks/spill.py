#!/usr/bin/env python
"""Spilling benchmark: lightray (and Ray) spill and restore vs plain file bandwidth.

Usage:
    python benchmarks/spill.py                 # plain files + lightray
    python benchmarks/spill.py --vs ray        # ... + Ray, in the same run
    python benchmarks/spill.py --gb 2.5 --object-mb 64 --store-mb 512 --json out.json

One workload (``--gb`` GiB of ``--object-mb`` MiB uint64 arrays), measured
three ways, each in its own subprocess (``--system file|lightray|ray``, as in
microbench.py), in ``--rounds`` rounds of file, lightray, ray:

* ``file``: plain file bandwidth on the disk of the spill directories.
  Write: the N arrays to N new files with ``os.write`` in 64 MiB steps, no
  fsync (so: until the data is in the page cache; the spilling systems do not
  fsync either). Read: the N files back with ``os.preadv`` into one buffer,
  in 64 MiB steps, plus the checksum below. Then lightray's own copies
  without the runtime: one thread ``pwrite``\ s each array into a new
  /dev/shm file (a put) while another ``sendfile``\ s it to a new file and
  unlinks it (the spill thread); and per file, ``sendfile`` into a new
  /dev/shm file, ``mmap``, checksum, unlink (restore + get + drop).
* ``lightray`` / ``ray``: ``init(num_cpus=2, object_store_memory=--store-mb)``
  with the spill directory in the same temp folder; ``put`` the N arrays,
  holding every ref, so all but the last few are spilled. Spill throughput:
  bytes spilled (the store's own counter) / time from just before the first
  put to the first poll that shows the counter's final value (polled every
  20 ms after the last put returned; final = unchanged for 1.5 s). So it
  includes the puts: the producer writing each object into the store.
  Restore: drop the refs of the objects still in memory, then ``get`` every
  spilled object in put order, checksum it and drop its ref. Restore
  throughput: bytes restored (the store's counter) / time of that loop.

Checksum: the sum of one uint64 per 4 KiB page (``a[::512].sum()``), so every
page of every object is read; each object is checked against the value it
must have. Before each timed write/spill phase, ``--prewarm-gb`` GiB are
written to a scratch file and deleted (see ``prewarm``). Sizes are in MiB /
GiB (``--object-mb 64`` is 2^26 bytes); throughputs in GB/s (10^9 B/s).
"""
from __future__ import annotations

import argparse
import importlib
import mmap
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import harness
from harness import emit, error_text, fmt, log

SCRIPT = os.path.abspath(__file__)
START_TAG = "@@SPILLBENCH_START"
RESULT_TAG = "@@SPILLBENCH_RESULT"

MiB = 1 << 20
GiB = 1 << 30
STEP = 64 * MiB            # size of one write / read / sendfile call, as lightray's spill
PAGE_WORDS = 4096 // 8     # uint64 words per 4 KiB page
POLL_S = 0.02              # poll interval while waiting for spilling to finish
SETTLE_S = 1.5             # the spilled counter is final once unchanged this long
SETTLE_MAX_S = 60.0        # give up waiting for it after this long
FREE_WAIT_S = 5.0          # wait at most this long for dropped objects to leave memory
SPILL_THRESHOLD = 0.8      # lightray's and Ray's default share of the store before spilling

SYSTEMS = ("file", "lightray", "ray")
CASES = ("spill", "restore")
PACKAGES = {"Ray": "ray", "NumPy": "numpy"}
SHM_DIR = "/dev/shm"
RAM_FILESYSTEMS = {"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"}


# --------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------


@dataclass
class Workload:
    gb: float          # GiB to put in total
    object_mb: int     # MiB per object
    store_mb: int      # MiB of object_store_memory
    prewarm_gb: float = 0.0   # GiB of page cache to fill and free before each timed phase

    @property
    def object_bytes(self) -> int:
        return self.object_mb * MiB

    @property
    def store_bytes(self) -> int:
        return self.store_mb * MiB

    @property
    def count(self) -> int:
        return max(1, round(self.gb * GiB / self.object_bytes))

    @property
    def total_bytes(self) -> int:
        return self.count * self.object_bytes

    def args(self) -> list:
        return ["--gb", repr(self.gb), "--object-mb", str(self.object_mb),
                "--store-mb", str(self.store_mb), "--prewarm-gb", repr(self.prewarm_gb)]


@dataclass
class Result:
    case: str
    value: Optional[float] = None   # GB/s
    unit: str = "GB/s"
    error: Optional[str] = None
    extra: dict = field(default_factory=dict)


def make_array(object_bytes: int):
    """Random uint64 words (incompressible; nothing compresses here anyway)."""
    import numpy as np

    return np.random.default_rng(0).integers(0, 2**63, size=object_bytes // 8,
                                             dtype=np.uint64)


def checksum(words) -> int:
    """Sum (mod 2^64) of one uint64 per 4 KiB page: reads every page."""
    return int(words[::PAGE_WORDS].sum())


class Stamp:
    """Object i is the base array with word 0 set to i; its checksum is known."""

    def __init__(self, arr):
        self.arr = arr
        arr[0] = 0
        self.base = checksum(arr)

    def set(self, i: int):
        self.arr[0] = i
        return self.arr

    def check(self, i: int, words) -> None:
        got = checksum(words)
        want = (self.base + i) % 2**64
        if got != want or int(words[0]) != i:
            raise AssertionError(f"object {i}: checksum {got:#x}, expected {want:#x}")


def gbps(nbytes: float, seconds: float) -> Optional[float]:
    return nbytes / seconds / 1e9 if seconds > 0 else None


def count_files(root: str) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def fs_type(path: str) -> str:
    """Filesystem type of the mount holding path (from /proc/mounts)."""
    path = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) \
                        and len(mount) >= len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


# --------------------------------------------------------------------------
# Plain files
# --------------------------------------------------------------------------


def _write_file(path: str, data) -> None:
    view = memoryview(data).cast("B")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        offset = 0
        while offset < len(view):
            offset += os.write(fd, view[offset:offset + STEP])
    finally:
        os.close(fd)


def _read_file(path: str, buffer, size: int) -> None:
    view = memoryview(buffer).cast("B")
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        while offset < size:
            got = os.preadv(fd, [view[offset:offset + STEP]], offset)
            if got == 0:
                raise OSError(f"{path}: short read at {offset} of {size}")
            offset += got
    finally:
        os.close(fd)


def _sendfile_all(target: int, source: int, size: int) -> None:
    offset = 0
    while offset < size:
        sent = os.sendfile(target, source, offset, min(STEP, size - offset))
        if sent == 0:
            raise OSError(f"short sendfile: {offset} of {size}")
        offset += sent


def _remove_all(paths) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def prewarm(wl: Workload, root: str, data) -> Optional[float]:
    """Write prewarm_gb GiB to a scratch file and delete it; returns the seconds.

    On this VM (free page reporting) memory the guest has not used for a few
    seconds is handed back to the host, and touching it again costs about
    2 us per 4 KiB page: writing to the page cache runs at 0.4-0.6 GB/s on
    such memory and at 1.5-3.5 GB/s on memory freed just before. Filling and
    freeing enough page cache right before each timed phase puts every system
    on recently used memory, so that the phases compare the software rather
    than the order in which they happened to run.
    """
    if wl.prewarm_gb <= 0:
        return None
    path = os.path.join(root, f"prewarm-{os.getpid()}")
    view = memoryview(data).cast("B")
    todo = int(wl.prewarm_gb * GiB)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        while todo > 0:
            todo -= os.write(fd, view[:min(len(view), todo)])
    finally:
        os.close(fd)
        os.unlink(path)
    return time.perf_counter() - t0


def _put_and_spill(stamp: Stamp, shm: list, copies: list, size: int) -> float:
    """Seconds to write every object into a new /dev/shm file (this thread)
    while a second thread copies each to its file and unlinks it."""
    import queue
    import threading

    handoff: queue.Queue = queue.Queue(maxsize=1)
    failure: list = []

    def spill_thread():
        while True:
            item = handoff.get()
            if item is None:
                return
            segment, target = item
            try:
                source = os.open(segment, os.O_RDONLY)
                try:
                    out = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                    try:
                        _sendfile_all(out, source, size)
                    finally:
                        os.close(out)
                finally:
                    os.close(source)
                    os.unlink(segment)
            except OSError as exc:
                failure.append(exc)

    thread = threading.Thread(target=spill_thread, daemon=True)
    t0 = time.perf_counter()
    thread.start()
    try:
        for i, (segment, target) in enumerate(zip(shm, copies)):
            fd = os.open(segment, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            try:
                os.pwrite(fd, stamp.set(i), 0)
            finally:
                os.close(fd)
            handoff.put((segment, target))
    finally:
        handoff.put(None)
        thread.join()
    seconds = time.perf_counter() - t0
    if failure:
        raise failure[0]
    return seconds


def _shm_path(i: int) -> str:
    return os.path.join(SHM_DIR, f"lrspillbench-{os.getpid()}-{i:05d}")


def run_file(wl: Workload, root: str, stamp: Stamp) -> tuple:
    """Plain-file reference numbers; returns (spill result, restore result)."""
    import numpy as np

    folder = os.path.join(root, "file")
    os.makedirs(folder)
    n, size = wl.count, wl.object_bytes
    files = [os.path.join(folder, f"obj-{i:05d}") for i in range(n)]
    copies = [os.path.join(folder, f"copy-{i:05d}") for i in range(n)]
    shm = [_shm_path(i) for i in range(n)]
    try:
        prewarm_s = prewarm(wl, root, stamp.arr)
        # 1. write() from memory: the plain reference for spilling.
        t0 = time.perf_counter()
        for i, path in enumerate(files):
            _write_file(path, stamp.set(i))
        write_s = time.perf_counter() - t0

        # 2. preadv() into one (warm) buffer + checksum: for restoring.
        buffer = np.zeros_like(stamp.arr)
        t0 = time.perf_counter()
        for i, path in enumerate(files):
            _read_file(path, buffer, size)
            stamp.check(i, buffer)
        read_s = time.perf_counter() - t0
        _remove_all(files)

        # 3. lightray's copies for put + spill, without the runtime: one
        #    thread writes each object into a new /dev/shm file (a put),
        #    another sendfiles it to a new file and unlinks it (the spill
        #    thread), at most one object waiting between them.
        mechanism_write_s = _put_and_spill(stamp, shm, copies, size)

        # 4. lightray's copies for restore + get + drop: sendfile the file
        #    into a new /dev/shm file, map it, checksum, unlink it.
        t0 = time.perf_counter()
        for i, (path, segment) in enumerate(zip(copies, shm)):
            source = os.open(path, os.O_RDONLY)
            try:
                fd = os.open(segment, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
                try:
                    os.ftruncate(fd, size)
                    _sendfile_all(fd, source, size)
                    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapping:
                        words = np.frombuffer(mapping, dtype=np.uint64)
                        stamp.check(i, words)
                        del words
                finally:
                    os.close(fd)
                    os.unlink(segment)
            finally:
                os.close(source)
        mechanism_read_s = time.perf_counter() - t0
    finally:
        _remove_all(files + copies + shm)
        shutil.rmtree(folder, ignore_errors=True)

    total = wl.total_bytes
    spill = Result("spill", gbps(total, write_s), extra={
        "what": "os.write from memory, 64 MiB steps, N new files, no fsync",
        "bytes": total, "seconds": write_s, "prewarm_s": prewarm_s,
        "mechanism_gbps": gbps(total, mechanism_write_s),
        "mechanism_seconds": mechanism_write_s,
        "mechanism_what": "thread 1 per object: pwrite into a new /dev/shm file; "
                          "thread 2: sendfile it to a new file (64 MiB steps), unlink "
                          "it; at most 1 object queued between them"})
    restore = Result("restore", gbps(total, read_s), extra={
        "what": "os.preadv into one buffer, 64 MiB steps, + checksum",
        "bytes": total, "seconds": read_s,
        "mechanism_gbps": gbps(total, mechanism_read_s),
        "mechanism_seconds": mechanism_read_s,
        "mechanism_what": "per object: sendfile the file into a new /dev/shm file, "
                          "mmap it, checksum, unlink it"})
    return spill, restore


# --------------------------------------------------------------------------
# lightray and Ray
# --------------------------------------------------------------------------


def _noop():
    return 0


class Store:
    """What the benchmark needs from a runtime: init, put/get, counters."""

    name = ""
    exact_restored = True   # stats()["restored"] is the store's own counter

    def __init__(self, wl: Workload, spill_dir: str):
        self.wl, self.spill_dir = wl, spill_dir
        self.tracked: list = []   # the refs being measured

    def stats(self) -> dict:
        """spilled and restored: bytes ever (restored None if unknown);
        pinned: bytes of primary copies in memory now (None if unknown)."""
        raise NotImplementedError

    def spilled_flags(self, refs: list) -> list:
        """For each ref: is the object spilled (to be read back from disk)?"""
        raise NotImplementedError

    def warm_up(self) -> None:
        import numpy as np

        noop = self.rt.remote(_noop)
        self.rt.get([noop.remote() for _ in range(4)])
        small = np.ones(MiB // 8)
        assert float(self.rt.get(self.rt.put(small)).sum()) == small.size
        time.sleep(1.0)   # let worker start-up finish before timing

    def shutdown(self) -> None:
        self.rt.shutdown()


class LightrayStore(Store):
    name = "lightray"

    def __init__(self, wl: Workload, spill_dir: str):
        super().__init__(wl, spill_dir)
        import lightray

        self.rt = lightray
        lightray.init(num_cpus=2, object_store_memory=wl.store_bytes, spill_dir=spill_dir)

    def stats(self) -> dict:
        s = self.rt.memory_summary()
        return {"spilled": s["spilled_bytes_total"], "restored": s["restored_bytes"],
                "pinned": s["used_bytes"], "reserved": s["reserved_bytes"],
                "on_disk": s["spilled_bytes"],
                # time lightray's spill thread spent copying, for copy-only rates
                "spill_seconds": s.get("spill_seconds"),
                "restore_seconds": s.get("restore_seconds")}

    def spilled_flags(self, refs: list) -> list:
        states = {row["object_id"]: row["state"]
                  for row in self.rt.memory_summary()["objects"]}
        return [ref is not None and states.get(ref.hex()) == "spilled" for ref in refs]


class RayStore(Store):
    """Ray's counters come from the raylet's memory info (what ``ray memory
    --stats-only`` prints), which needs the grpcio package; without it,
    spilled bytes are the sizes of the tracked objects that ``did_spill``
    (``ray.experimental.get_object_locations``) and restored bytes are not
    known (the restore side then counts every spilled object it gets)."""

    name = "ray"

    def __init__(self, wl: Workload, spill_dir: str):
        super().__init__(wl, spill_dir)
        import ray

        self.rt = ray
        # Ray 2.60: object_spilling_directory is the stable form of
        # _system_config={"object_spilling_config": json.dumps({"type":
        # "filesystem", "params": {"directory_path": spill_dir}})}; Ray builds
        # exactly that config from it (ray/_private/node.py,
        # _get_object_spilling_config).
        ray.init(num_cpus=2, object_store_memory=wl.store_bytes,
                 object_spilling_directory=spill_dir, include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR")
        self._reply = None
        try:
            importlib.import_module("grpc")   # get_memory_info_reply needs it
            from ray._private.internal_api import get_memory_info_reply, get_state_from_address
        except ImportError:
            self.exact_restored = False
            log("  ray: no grpcio: spilled bytes from did_spill flags, restored "
                "bytes not known (pip install grpcio for Ray's own counters)")
            return
        self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
        self._reply = get_memory_info_reply

    def _locations(self, refs: list) -> dict:
        live = [ref for ref in refs if ref is not None]
        return self.rt.experimental.get_object_locations(live) if live else {}

    def stats(self) -> dict:
        if self._reply is None:
            spilled = sum(loc["object_size"] for loc in self._locations(self.tracked).values()
                          if loc.get("did_spill"))
            return {"spilled": spilled, "restored": None, "pinned": None}
        s = self._reply(self._state).store_stats
        return {"spilled": s.spilled_bytes_total, "restored": s.restored_bytes_total,
                "pinned": s.object_store_bytes_primary_copy,
                "used": s.object_store_bytes_used, "fallback": s.object_store_bytes_fallback,
                "spill_time_total_s": s.spill_time_total_s,
                "restore_time_total_s": s.restore_time_total_s,
                "spilled_objects": s.spilled_objects_total,
                "restored_objects": s.restored_objects_total}

    def spilled_flags(self, refs: list) -> list:
        locations = self._locations(refs)
        return [ref is not None and bool(locations.get(ref, {}).get("did_spill"))
                for ref in refs]


STORES = {"lightray": LightrayStore, "ray": RayStore}


def spill_phase(store: Store, stamp: Stamp, root: str) -> tuple:
    """Put every object, holding the refs; wait until spilling has finished."""
    wl, rt = store.wl, store.rt
    prewarm_s = prewarm(wl, root, stamp.arr)
    before = store.stats()
    refs = store.tracked
    put_done = []
    t0 = time.perf_counter()
    for i in range(wl.count):
        refs.append(rt.put(stamp.set(i)))
        put_done.append(time.perf_counter() - t0)

    samples = []
    last, changed_at = None, None
    while True:
        stats = store.stats()
        now = time.perf_counter() - t0
        samples.append((round(now, 4), stats["spilled"]))
        if stats["spilled"] != last:
            last, changed_at = stats["spilled"], now
        elif now - changed_at >= SETTLE_S:
            break
        if now - put_done[-1] > SETTLE_MAX_S:
            log(f"  warning: {store.name}: spilled bytes still changing "
                f"{SETTLE_MAX_S:.0f}s after the last put")
            break
        time.sleep(POLL_S)

    spilled = last - before["spilled"]
    # Spilling starts when a put would take the store past the threshold:
    # from the return of the last put that stayed under it.
    under = int(SPILL_THRESHOLD * wl.store_bytes) // wl.object_bytes
    t_threshold = put_done[under - 1] if 0 < under <= len(put_done) else 0.0
    extra = {
        "objects": wl.count, "object_bytes": wl.object_bytes, "put_bytes": wl.total_bytes,
        "spilled_bytes": spilled, "seconds": changed_at,
        "put_seconds": put_done[-1], "put_gbps": gbps(wl.total_bytes, put_done[-1]),
        "put_done_s": [round(t, 4) for t in put_done],
        "threshold_s": t_threshold, "prewarm_s": prewarm_s,
        "spill_gbps_from_threshold": gbps(spilled, changed_at - t_threshold),
        "samples_after_puts": samples, "stats_before": before, "stats_after": stats,
        "spill_files": count_files(store.spill_dir),
        "spill_dir_bytes": dir_bytes(store.spill_dir),
        "copy_gbps": _copy_gbps(spilled, before, stats, "spill_seconds"),
    }
    return refs, Result("spill", gbps(spilled, changed_at), extra=extra)


def _copy_gbps(nbytes: int, before: dict, after: dict, key: str) -> Optional[float]:
    """Bytes over the time the store's spill thread spent copying them (lightray
    reports it; None elsewhere): the spill mechanism alone, without the puts
    that feed it or the gets that wait for it."""
    if before.get(key) is None or after.get(key) is None:
        return None
    return gbps(nbytes, after[key] - before[key])


def dir_bytes(root: str) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                pass
    return total


def wait_for_frees(store: Store, most: int) -> float:
    """Wait until at most ``most`` bytes of primary copies are in memory (1 s
    when the store does not say); returns the seconds waited."""
    t0 = time.perf_counter()
    if store.stats()["pinned"] is None:
        time.sleep(1.0)
        return time.perf_counter() - t0
    while time.perf_counter() - t0 < FREE_WAIT_S:
        if store.stats()["pinned"] <= most:
            break
        time.sleep(POLL_S)
    return time.perf_counter() - t0


def restore_phase(store: Store, stamp: Stamp, refs: list) -> Result:
    """Free what is still in memory, then get, check and drop each spilled
    object, in put order."""
    wl, rt = store.wl, store.rt
    flags = store.spilled_flags(refs)
    spilled = [i for i, flag in enumerate(flags) if flag]
    for i, flag in enumerate(flags):
        if not flag:
            refs[i] = None
    waited = wait_for_frees(store, wl.object_bytes // 2)
    before = store.stats()
    t0 = time.perf_counter()
    for i in spilled:
        value = rt.get(refs[i])
        stamp.check(i, value)
        del value
        refs[i] = None
    seconds = time.perf_counter() - t0
    after = store.stats()
    fetched = len(spilled) * wl.object_bytes
    if store.exact_restored:
        restored = after["restored"] - before["restored"]
    else:
        restored = fetched   # assumed: every spilled object came back from disk
    extra = {"objects": len(spilled), "object_bytes": wl.object_bytes,
             "restored_bytes": restored, "restored_bytes_exact": store.exact_restored,
             "seconds": seconds, "get_gbps": gbps(fetched, seconds),
             "spilled_during_restore": (after["spilled"] - before["spilled"]
                                        if store.exact_restored else None),
             "spilled_indices": spilled, "free_wait_s": waited,
             "stats_before": before, "stats_after": after,
             "copy_gbps": _copy_gbps(restored, before, after, "restore_seconds")}
    return Result("restore", gbps(restored, seconds), extra=extra)


def run_store(system: str, wl: Workload, root: str, stamp: Stamp, cases: list,
              report: Callable[[Result], None]) -> None:
    spill_dir = os.path.join(root, system)
    os.makedirs(spill_dir)
    store = None
    current = "spill"
    try:
        store = STORES[system](wl, spill_dir)
        store.warm_up()
        refs, spill = spill_phase(store, stamp, root)
        if "spill" in cases:
            report(spill)
        current = "restore"
        emit(START_TAG, "restore")
        restore = restore_phase(store, stamp, refs)
        refs.clear()
        if "restore" in cases:
            report(restore)
    except Exception as exc:
        for case in cases:
            if CASES.index(case) >= CASES.index(current):
                report(Result(case, error=error_text(exc)))
    finally:
        if store is not None:
            store.tracked.clear()
            try:
                store.shutdown()
            except Exception as exc:
                log(f"  {system}: shutdown failed: {error_text(exc)}")
        shutil.rmtree(spill_dir, ignore_errors=True)


# --------------------------------------------------------------------------
# Worker: ``--system NAME``
# --------------------------------------------------------------------------


def worker_main(system: str, cases: list, wl: Workload, root: str) -> None:
    def report(result: Result) -> None:
        emit(RESULT_TAG, asdict(result))

    emit(START_TAG, "spill")
    t0 = time.perf_counter()
    os.sync()   # no other dirty data waiting for writeback when timing starts
    sync_s = time.perf_counter() - t0
    if sync_s > 1:
        log(f"  {system}: sync took {sync_s:.1f}s")
    stamp = Stamp(make_array(wl.object_bytes))
    if system != "file":
        run_store(system, wl, root, stamp, cases, report)
        return
    try:
        results = run_file(wl, root, stamp)
    except Exception as exc:
        results = [Result(case, error=error_text(exc)) for case in CASES]
    for result in results:
        if result.case in cases:
            report(result)


# --------------------------------------------------------------------------
# Parent: rounds of one worker per system, then the report
# --------------------------------------------------------------------------


def error_result(case: str, message: str) -> dict:
    return asdict(Result(case, error=message))


def log_result(system: str, res: dict) -> None:
    if res["error"]:
        log(f"  {system:9s} {res['case']:8s} ERROR {res['error']}")
        return
    extra = res["extra"]
    if system == "file":
        more = f" (lightray's copies alone: {fmt(extra.get('mechanism_gbps'))} GB/s)"
    elif res["case"] == "spill":
        more = (f" ({extra['spilled_bytes'] / GiB:.2f} GiB in {extra['seconds']:.2f}s; "
                f"puts {fmt(extra['put_gbps'])} GB/s)")
    else:
        more = f" ({extra['restored_bytes'] / GiB:.2f} GiB in {extra['seconds']:.2f}s)"
    log(f"  {system:9s} {res['case']:8s} {fmt(res['value'])} GB/s{more}")


def values(runs: dict, system: str, case: str, key: Optional[str] = None) -> list:
    """One value per round (None where that round failed)."""
    out = []
    for by_case in runs.get(system, []):
        res = by_case.get(case) or {}
        if res.get("error"):
            out.append(None)
        else:
            out.append((res.get("extra") or {}).get(key) if key else res.get("value"))
    return out


def median(xs: list) -> Optional[float]:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def cell(xs: list) -> str:
    """Median, and the range when there are several rounds."""
    good = [x for x in xs if x is not None]
    if not xs:
        return "-"
    if not good:
        return "ERROR"
    text = fmt(median(good))
    if len(good) > 1:
        text += f" ({fmt(min(good))}-{fmt(max(good))})"
    if len(good) < len(xs):
        text += f" [{len(xs) - len(good)} failed]"
    return text


def ratio_cell(top: list, bottom: list, as_percent: bool) -> str:
    """Median over rounds of top/bottom within each round."""
    ratios = [a / b for a, b in zip(top, bottom) if a and b]
    if not ratios:
        return "-"
    m = median(ratios)
    return f"{100 * m:.0f}%" if as_percent else f"{m:.2f}x"


def render_table(runs: dict) -> str:
    write = values(runs, "file", "spill")
    read = values(runs, "file", "restore")
    rows = [["", "spill / write GB/s ↑", "% of file write", "restore / read GB/s ↑",
             "% of file read"]]
    if "file" in runs:
        rows.append(["plain file: write() / preadv()", cell(write), "100%",
                     cell(read), "100%"])
        mech_w = values(runs, "file", "spill", "mechanism_gbps")
        mech_r = values(runs, "file", "restore", "mechanism_gbps")
        rows.append(["lightray's copies, no runtime", cell(mech_w),
                     ratio_cell(mech_w, write, True), cell(mech_r),
                     ratio_cell(mech_r, read, True)])
    for system in ("lightray", "ray"):
        if system in runs:
            spill, restore = values(runs, system, "spill"), values(runs, system, "restore")
            rows.append([system, cell(spill), ratio_cell(spill, write, True),
                         cell(restore), ratio_cell(restore, read, True)])
            copy_w = values(runs, system, "spill", "copy_gbps")
            copy_r = values(runs, system, "restore", "copy_gbps")
            if any(x is not None for x in copy_w + copy_r):
                rows.append([f"{system}: its spill thread's copies only", cell(copy_w),
                             ratio_cell(copy_w, write, True), cell(copy_r),
                             ratio_cell(copy_r, read, True)])
    if "lightray" in runs and "ray" in runs:
        rows.append(["lightray / ray",
                     ratio_cell(values(runs, "lightray", "spill"),
                                values(runs, "ray", "spill"), False), "",
                     ratio_cell(values(runs, "lightray", "restore"),
                                values(runs, "ray", "restore"), False), ""])
    return harness.markdown_table(rows, right_aligned={1, 2, 3, 4})


def render_details(runs: dict) -> str:
    header = ["", "puts GB/s", "spill GB/s from threshold", "spilled GiB", "spill s",
              "restored GiB", "restore s", "spill files"]
    rows = [header]
    for system in ("lightray", "ray"):
        if system not in runs:
            continue

        def m(case, key, scale=1.0, system=system):
            v = median(values(runs, system, case, key))
            return "-" if v is None else (f"{v / scale:.2f}" if scale != 1.0 else fmt(v))

        rows.append([system, m("spill", "put_gbps"), m("spill", "spill_gbps_from_threshold"),
                     m("spill", "spilled_bytes", GiB), m("spill", "seconds"),
                     m("restore", "restored_bytes", GiB), m("restore", "seconds"),
                     str(round(median(values(runs, system, "spill", "spill_files")) or 0))])
    return harness.markdown_table(rows, right_aligned=set(range(1, len(header))))


def notes(runs: dict) -> list:
    out = []
    restore_exact = values(runs, "ray", "restore", "restored_bytes_exact")
    if any(x is False for x in restore_exact):
        out.append("Ray's restored bytes were not measured (no grpcio): its restore rate "
                   "counts every spilled object it got as read back from disk")
    spill_stats = [s for s in values(runs, "ray", "spill", "stats_after") if s]
    restore_stats = [s for s in values(runs, "ray", "restore", "stats_after") if s]
    own_w = [gbps(s["spilled"], s["spill_time_total_s"]) for s in spill_stats
             if s.get("spill_time_total_s")]
    own_r = [gbps(s["restored"], s["restore_time_total_s"]) for s in restore_stats
             if s.get("restore_time_total_s")]
    if own_w or own_r:
        out.append(f"Ray's own counters (bytes / time in its IO workers): spill "
                   f"{cell(own_w)} GB/s, restore {cell(own_r)} GB/s")
    fallback = [s.get("fallback") for s in spill_stats if s.get("fallback")]
    if fallback:
        out.append(f"Ray put up to {max(fallback) / GiB:.2f} GiB into fallback "
                   f"(disk-backed) allocations")
    for system in ("lightray", "ray"):
        during = [x for x in values(runs, system, "restore", "spilled_during_restore")
                  if x and x > 0]
        if during:
            out.append(f"{system} spilled {max(during) / GiB:.2f} GiB more while restoring")
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Spill and restore throughput of lightray (and Ray) next to "
                    "plain file bandwidth on the same disk.")
    p.add_argument("--vs", choices=["ray"], help="also run Ray for comparison")
    p.add_argument("--gb", type=float, default=None,
                   help="GiB to put in total (default 2.5; 1 with --quick)")
    p.add_argument("--object-mb", type=int, default=64, help="MiB per object (default 64)")
    p.add_argument("--store-mb", type=int, default=512,
                   help="object_store_memory in MiB (default 512)")
    p.add_argument("--prewarm-gb", type=float, default=None,
                   help="GiB of page cache to fill and free right before each timed "
                        "phase (default: --gb + --store-mb + 0.5 GiB; 0: none)")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds of all systems, one after the other (default 3; 1 with "
                        "--quick)")
    p.add_argument("--dir", default=tempfile.gettempdir(),
                   help="make the temp folder for the files and spill directories here "
                        "(default: %(default)s); must be on a disk, not tmpfs")
    p.add_argument("--quick", action="store_true", help="1 GiB and 1 round unless given")
    p.add_argument("--json", metavar="PATH", help="write results as JSON")
    p.add_argument("--timeout", type=float, default=150.0,
                   help="per-case timeout in seconds (default: 150)")
    p.add_argument("--system", choices=SYSTEMS,
                   help="internal: run one system in this process, print JSON lines")
    p.add_argument("--cases", help="internal: spill,restore")
    p.add_argument("--root", help="internal: the temp folder made by the parent")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    gb = args.gb if args.gb is not None else (1.0 if args.quick else 2.5)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    prewarm_gb = (args.prewarm_gb if args.prewarm_gb is not None
                  else gb + args.store_mb / 1024 + 0.5)
    wl = Workload(gb, args.object_mb, args.store_mb, prewarm_gb)
    if args.system:
        cases = harness.parse_list(args.cases, list(CASES), "case")
        worker_main(args.system, cases, wl, args.root)
        return 0

    kind = fs_type(args.dir)
    if kind in RAM_FILESYSTEMS:
        raise SystemExit(f"--dir {args.dir} is on {kind} (memory), not a disk")
    systems = harness.with_ray_if_asked(["file", "lightray"], args.vs)

    info = harness.machine_info(PACKAGES.values())
    info["spill_fs"] = kind
    workload = (f"{wl.count} objects x {wl.object_mb} MiB = {wl.total_bytes / GiB:.2f} GiB, "
                f"object_store_memory {wl.store_mb} MiB, files and spill dirs in "
                f"{args.dir} ({kind}), {rounds} round(s), prewarm {wl.prewarm_gb:.2f} GiB")
    log(f"machine: {harness.describe_machine(info, PACKAGES)}")
    log(f"workload: {workload}")
    root = tempfile.mkdtemp(prefix="lightray-spill-bench-", dir=args.dir)
    spec = harness.WorkerSpec(SCRIPT, START_TAG, RESULT_TAG, error_result, log_result,
                              extra_args=tuple(wl.args() + ["--root", root]))
    runs = {system: [] for system in systems}
    t_start = time.perf_counter()
    try:
        for r in range(rounds):
            for system in systems:
                log(f"round {r + 1}/{rounds}: {system} ...")
                t0 = time.perf_counter()
                runs[system].append(harness.run_system(spec, system, list(CASES),
                                                       args.quick, args.timeout))
                log(f"  {system} done in {time.perf_counter() - t0:.1f}s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    log(f"total {time.perf_counter() - t_start:.0f}s")

    print()
    print(workload)
    print()
    print(render_table(runs))
    if "lightray" in runs or "ray" in runs:
        print()
        print(render_details(runs))
    for note in notes(runs):
        print(f"* {note}")
    harness.print_errors({f"{system} (round {r + 1})": by_case
                          for system, rs in runs.items() for r, by_case in enumerate(rs)})
    print(f"\nmedian over rounds (min-max); percentages and ratios: median of the "
          f"per-round ratios; GB/s = 10^9 B/s\nmachine: "
          f"{harness.describe_machine(info, PACKAGES)}")

    if args.json:
        harness.write_json(args.json, {"machine": info, "rounds": rounds, "workload": asdict(wl) | {
            "objects": wl.count, "object_bytes": wl.object_bytes,
            "total_bytes": wl.total_bytes, "store_bytes": wl.store_bytes}, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
