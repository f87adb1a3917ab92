"""Shared fixtures for the lightray test suite.

* ``no_leaks`` (autouse): after every test, shuts the runtime down (if it is
  still running) and fails the test if child processes of the test process,
  new ``/dev/shm`` segments of this run (prefix ``LIGHTRAY_SEGMENT_PREFIX``) or
  new session directories (which hold the ipc socket files) are still around
  after 10 s.
* ``runtime``: a fresh ``lightray.init(num_cpus=2)`` runtime per test.

Unless ``LIGHTRAY_TEMP_DIR`` / ``LIGHTRAY_HOME`` are set, the run keeps its
session directories and the cluster keys its heads make in private temporary
folders, removed at the end.
"""
import os
import shutil
import signal
import tempfile
import time

import psutil
import pytest

# Session directories of this test run go to a private folder, so that another
# lightray on this machine (a second test run, a benchmark) is never taken for
# a leak of ours.
if not os.environ.get("LIGHTRAY_TEMP_DIR"):
    _PRIVATE_TEMP_DIR = tempfile.mkdtemp(prefix="lightray-tests-")
    os.environ["LIGHTRAY_TEMP_DIR"] = _PRIVATE_TEMP_DIR
else:
    _PRIVATE_TEMP_DIR = None
# Cluster keys that heads of this run make go to a private home too, never
# into the user's ~/.lightray.
if not os.environ.get("LIGHTRAY_HOME"):
    _PRIVATE_HOME = tempfile.mkdtemp(prefix="lightray-tests-home-")
    os.environ["LIGHTRAY_HOME"] = _PRIVATE_HOME
else:
    _PRIVATE_HOME = None
os.environ.pop("LIGHTRAY_CLUSTER_KEY", None)


def pytest_sessionfinish(session, exitstatus):
    for private in (_PRIVATE_TEMP_DIR, _PRIVATE_HOME):
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)

SHM_DIR = "/dev/shm"
# This run's segments start with their own prefix (still "lr_..."), so that the
# leak check never counts segments of another lightray on this machine.
SHM_PREFIX = os.environ.setdefault("LIGHTRAY_SEGMENT_PREFIX", f"lr_t{os.getpid():x}_")
LEAK_WAIT_S = 10.0
DEFAULT_TEST_TIMEOUT_S = 60


def shm_entries():
    """Names of the lightray shared-memory segments currently in /dev/shm."""
    try:
        return {n for n in os.listdir(SHM_DIR) if n.startswith(SHM_PREFIX)}
    except FileNotFoundError:  # pragma: no cover - non-Linux
        return set()


def attempts(path):
    """How many attempts a task made, counted as characters it appended to path."""
    try:
        with open(path) as f:
            return len(f.read())
    except FileNotFoundError:
        return 0


def wait_for(predicate, timeout=15.0, interval=0.02):
    """Poll predicate until it holds or timeout passes; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def wait_for_file(path, timeout=15.0):
    """True once path exists (tasks and actors signal progress with files)."""
    return wait_for(lambda: os.path.exists(path), timeout)


def pid_alive(pid):
    """True if pid runs (a zombie awaiting its reaper counts as dead)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def available_cpus():
    import lightray

    return lightray.available_resources().get("CPU", 0.0)


def session_dirs():
    """Session directories (sockets, pid files) of lightray runtimes on this host."""
    from lightray.config import temp_dir

    try:
        return {n for n in os.listdir(temp_dir()) if n.startswith("session_")}
    except FileNotFoundError:
        return set()


def live_children():
    """Child processes (recursive) of the test process, zombies included."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            out.append((p.pid, p.status(), " ".join(p.cmdline())[:120]))
        except psutil.NoSuchProcess:
            pass
    return out


def pytest_collection_modifyitems(items):
    """Give every test a timeout, even without an ini ``timeout`` setting."""
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT_S))


def _shutdown_quietly():
    try:
        import lightray
    except Exception:
        return None
    try:
        if lightray.is_initialized():
            lightray.shutdown()
    except Exception as e:  # reported by the caller
        return e
    return None


def _force_cleanup(children, segments):
    """Kill leaked children / unlink leaked segments so later tests start clean."""
    for pid, _status, _cmd in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 5
    for pid, _status, _cmd in children:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our direct child / already reaped
                break
            if done:
                break
            time.sleep(0.05)
    for name in segments:
        try:
            os.unlink(os.path.join(SHM_DIR, name))
        except OSError:
            pass


@pytest.fixture(autouse=True)
def no_leaks():
    shm_before = shm_entries()
    dirs_before = session_dirs()
    yield
    shutdown_error = _shutdown_quietly()
    deadline = time.monotonic() + LEAK_WAIT_S
    while True:
        children = live_children()
        new_segments = shm_entries() - shm_before
        new_dirs = session_dirs() - dirs_before
        if (not children and not new_segments and not new_dirs) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    problems = []
    if shutdown_error is not None:
        problems.append(f"lightray.shutdown() raised {shutdown_error!r}")
    if children:
        problems.append(
            "child processes still present %.0fs after shutdown: %s"
            % (LEAK_WAIT_S, ", ".join(f"pid={p} status={s} cmd={c!r}" for p, s, c in children))
        )
    if new_segments:
        problems.append(
            "shared-memory segments not unlinked: %s" % ", ".join(sorted(new_segments))
        )
    if new_dirs:
        problems.append(
            "session directories (socket files) not removed: %s" % ", ".join(sorted(new_dirs))
        )
    if problems:
        _force_cleanup(children, new_segments)
        pytest.fail("resource leak after test: " + "; ".join(problems), pytrace=False)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "both_modes: the module's tests that use the runtime or runtime_mode "
        "fixture run twice, against an agent and in local mode (init(local_mode=True))")
    config.addinivalue_line(
        "markers", "process_only(reason): the test is about processes (workers, agents, "
        "shared memory): it runs only against an agent, also in a both_modes module")


RUNTIME_MODES = ("cluster", "local")


def pytest_generate_tests(metafunc):
    """Tests of both_modes modules get a [cluster] and a [local] variant."""
    wants_mode = {"runtime", "runtime_mode"} & set(metafunc.fixturenames)
    if (wants_mode and metafunc.definition.get_closest_marker("both_modes") is not None
            and metafunc.definition.get_closest_marker("process_only") is None):
        metafunc.parametrize("runtime_mode", RUNTIME_MODES, indirect=True)


@pytest.fixture
def runtime_mode(request):
    """"cluster" or "local": the mode this variant of the test runs in."""
    return getattr(request, "param", "cluster")


@pytest.fixture
def start_runtime(runtime_mode):
    """lightray.init(**options) in this test's mode."""
    import lightray

    def start(**options):
        return lightray.init(local_mode=runtime_mode == "local", **options)
    return start


@pytest.fixture
def runtime(start_runtime):
    import lightray

    start_runtime(num_cpus=2)
    yield lightray
    lightray.shutdown()


@pytest.fixture
def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def own_cluster():
    """A Cluster of real agents the test starts itself (tests/cluster_utils.py);
    afterwards the driver detaches and every agent left is stopped and reaped."""
    import lightray
    from cluster_utils import Cluster

    nodes = Cluster()
    try:
        yield nodes
    finally:
        if lightray.is_initialized():
            lightray.shutdown()
        nodes.shutdown()


@pytest.fixture
def cluster(own_cluster):
    """Three real agents on 127.0.0.1 (a head and two that join it, 1 CPU each),
    and this process attached to the head as a driver."""
    import lightray

    own_cluster.add_node(head=True)
    own_cluster.add_node()
    own_cluster.add_node()
    lightray.init(address=own_cluster.head.address)
    own_cluster.wait_for_nodes(3)
    return own_cluster
