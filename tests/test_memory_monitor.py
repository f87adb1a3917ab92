"""The memory monitor (lightray.agent.memory_monitor): above the threshold it
kills the newest retriable task's worker (never a driver or the agent,
actors last), the task is retried after a backoff, and when its retries run
out ``get`` raises OutOfMemoryError naming the task, its memory and the
threshold. Kernel OOM kills are named as out of memory too.

The choices are checked as pure functions and on a real AgentState with a
sampler that reports what the test says; the whole path with a real agent
whose monitor has a small budget (LIGHTRAY_MEMORY_LIMIT_BYTES), so the
machine is never at risk: a task holding more than that is really killed.
"""
import os
import subprocess
import sys
import time

import pytest

import lightray
from lightray import exceptions
from lightray.agent import memory_monitor as mm
from lightray.agent.state import AgentState
from lightray.ids import IdMaker, return_ids
from lightray.serialization import ERROR, deserialize
from lightray.states import QUEUED, WAITING
from lightray.transport import messages as m
from cluster_utils import REPO
from conftest import attempts, wait_for, wait_for_file

DRIVER = b"driver01"
MB = 1 << 20
ids = IdMaker()


# ------------------------------------------------------------------ choices

def test_the_newest_retriable_task_is_chosen_first():
    candidates = [mm.Candidate(1, "old", mm.RETRIABLE, 1), mm.Candidate(2, "new", mm.RETRIABLE, 5),
                  mm.Candidate(3, "last", mm.LAST_ATTEMPT, 9), mm.Candidate(4, "a", mm.ACTOR, 10)]
    assert mm.choose_victim(candidates).name == "new"


def test_a_task_on_its_last_attempt_comes_before_an_actor_and_an_actor_comes_last():
    assert mm.choose_victim([mm.Candidate(3, "last", mm.LAST_ATTEMPT, 1),
                             mm.Candidate(4, "actor", mm.ACTOR, 2)]).name == "last"
    assert mm.choose_victim([mm.Candidate(4, "actor", mm.ACTOR, 2)]).name == "actor"
    assert mm.choose_victim([]) is None


def test_only_usage_above_the_threshold_counts():
    assert not mm.over_threshold(95, 100, 0.95)
    assert mm.over_threshold(96, 100, 0.95)
    assert not mm.over_threshold(10, 0, 0.5)


def test_backoff_doubles_per_attempt_up_to_a_cap():
    delays = [mm.backoff_seconds(n) for n in range(1, 8)]
    assert delays[0] == mm.BACKOFF_BASE and delays[1] == 2 * mm.BACKOFF_BASE
    assert delays == sorted(delays) and delays[-1] == mm.BACKOFF_MAX


@pytest.mark.parametrize("name,bad", [("LIGHTRAY_MEMORY_USAGE_THRESHOLD", "0"),
                                      ("LIGHTRAY_MEMORY_USAGE_THRESHOLD", "1.5"),
                                      ("LIGHTRAY_MEMORY_USAGE_THRESHOLD", "high"),
                                      ("LIGHTRAY_MEMORY_LIMIT_BYTES", "0"),
                                      ("LIGHTRAY_MEMORY_LIMIT_BYTES", "lots"),
                                      ("LIGHTRAY_MEMORY_MONITOR_INTERVAL_S", "-1")])
def test_a_memory_knob_set_to_a_value_it_does_not_take_is_refused_by_name(monkeypatch, name, bad):
    from lightray import config
    monkeypatch.setenv(name, bad)
    with pytest.raises(ValueError, match=name):
        config.memory_usage_threshold()
        config.memory_limit_bytes()
        config.memory_monitor_interval()


def test_an_agent_started_with_a_bad_memory_knob_exits_naming_it():
    env = dict(os.environ, PYTHONPATH=REPO, LIGHTRAY_MEMORY_USAGE_THRESHOLD="2")
    out = subprocess.run([sys.executable, "-m", "lightray.agent", "--num-cpus", "1"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    assert "LIGHTRAY_MEMORY_USAGE_THRESHOLD must be in (0, 1], got 2.0" in out.stderr


# ------------------------------------------------- on a real AgentState

class ScriptedMonitor(mm.MemoryMonitor):
    """Samples what the test sets; RSS of a pid is its pid in MB (traceable)."""

    def __init__(self, state, **kwargs):
        super().__init__(state, threshold=0.9, budget=None, interval=0.25, **kwargs)
        self.usage = (0, 100)

    def sample(self):
        return self.usage

    def _rss(self, pid):
        return pid * MB


@pytest.fixture
def state():
    agent = AgentState(node_id="node0000", session="s", resources={"CPU": 3.0},
                       pipeline_depth=1, max_workers=8, store_capacity=1 << 30)
    agent.on_hello(DRIVER, "driver", 1, "")
    agent.initial_workers(3)
    for pid, worker_id in enumerate(agent.effects.spawn, start=100):
        agent.on_spawned(worker_id, pid)
        agent.on_hello(worker_id.encode(), "worker", pid, worker_id)
    agent.effects.spawn.clear()
    agent.effects.outbox.clear()
    return agent


def submit(agent, name, max_retries=2):
    task_id = ids.task_id()
    spec = (task_id, b"f" * 16, name, None, [], [], 1, {"CPU": 1.0}, max_retries, False,
            None, 0, None)
    agent.handle(DRIVER, [(m.EXPORT, b"f" * 16, b"pickled function"), (m.SUBMIT, spec)])
    agent.schedule()
    return task_id


def pid_running(agent, task_id):
    (worker,) = [w for w in agent.workers.values() if w.queue and w.queue[0].task_id == task_id]
    return worker.pid


def result_error(agent, task_id):
    entry = agent.objects[return_ids(task_id, 1)[0]]
    assert entry.payload[0] == ERROR
    return deserialize(entry.payload[1])


def test_below_the_threshold_nothing_is_killed(state):
    monitor = ScriptedMonitor(state)
    submit(state, "work")
    monitor.usage = (90, 100)
    monitor.tick(0.0)
    assert state.effects.kill == [] and monitor.kills == 0


def test_above_the_threshold_the_newest_retriable_task_is_killed_not_the_older_or_last_attempt(
        state):
    monitor = ScriptedMonitor(state)
    older = submit(state, "older")
    monitor.tick(0.0)                       # seen running first
    submit(state, "no_retries", max_retries=0)
    newest = submit(state, "newest")
    monitor.usage = (95, 100)
    monitor.tick(0.25)
    assert state.effects.kill == [pid_running(state, newest)]
    assert pid_running(state, older) not in state.effects.kill
    # One kill at a time: nothing more until that worker is gone.
    monitor.tick(0.5)
    assert monitor.kills == 1


def test_a_killed_task_is_retried_after_its_backoff_then_fails_with_out_of_memory_error(state):
    monitor = ScriptedMonitor(state)
    task_id = submit(state, "hog", max_retries=1)
    monitor.usage = (99, 100)
    now = 0.0
    for attempt in range(2):
        monitor.tick(now)
        (pid,) = state.effects.kill
        state.effects.kill.clear()
        state.on_worker_exit(pid, monitor.on_worker_exit(pid, "killed by signal SIGKILL"))
        monitor.after_worker_exit(pid)
        if attempt == 0:
            task = state.tasks[task_id]
            assert task.state == WAITING and task.retries_left == 0
            monitor.tick(now + 0.1)                         # not yet: backing off
            assert task.state == WAITING
            now += mm.backoff_seconds(1) + 0.25
            monitor.usage = (10, 100)
            monitor.tick(now)                               # back in the queue
            assert task.state != WAITING
            for worker_id in state.effects.spawn:           # a worker for it
                state.on_spawned(worker_id, 200)
                state.on_hello(worker_id.encode(), "worker", 200, worker_id)
            state.effects.spawn.clear()
            state.schedule()
            monitor.usage = (99, 100)
    error = result_error(state, task_id)
    assert isinstance(error, exceptions.OutOfMemoryError)
    assert isinstance(error, exceptions.WorkerCrashedError)
    message = str(error)
    # (the scripted RSS of a worker is its pid in MiB)
    assert "hog()" in message and f"({pid} MiB)" in message and "threshold of 0.9" in message
    assert "2 attempt(s)" in message


def test_a_task_cancelled_while_it_backs_off_is_never_run_again(state):
    monitor = ScriptedMonitor(state)
    task_id = submit(state, "hog")
    monitor.usage = (99, 100)
    monitor.tick(0.0)
    (pid,) = state.effects.kill
    state.on_worker_exit(pid, monitor.on_worker_exit(pid, "killed by signal SIGKILL"))
    state.handle(DRIVER, [(m.CANCEL, return_ids(task_id, 1)[0], False)])
    monitor.usage = (10, 100)
    monitor.tick(100.0)
    assert task_id not in state.tasks
    assert isinstance(result_error(state, task_id), exceptions.TaskCancelledError)
    assert not any(t.state == QUEUED for q in state.queues.values() for t in q)


def test_a_worker_sigkilled_while_the_cgroups_oom_kill_count_rose_is_out_of_memory(
        state, tmp_path):
    root = tmp_path / "cgroup"
    (root / "app").mkdir(parents=True)
    (tmp_path / "proc_cgroup").write_text("0::/app\n")
    (root / "app" / "memory.max").write_text(f"{1 << 30}\n")
    (root / "app" / "memory.current").write_text("1000\n")
    events = root / "app" / "memory.events"
    events.write_text("oom 0\noom_kill 0\n")
    monitor = ScriptedMonitor(state, cgroup_root=str(root), proc_cgroup=str(tmp_path / "proc_cgroup"))
    task_id = submit(state, "hog", max_retries=0)
    pid = pid_running(state, task_id)
    events.write_text("oom 1\noom_kill 1\n")           # the kernel killed it
    status = monitor.on_worker_exit(pid, "killed by signal SIGKILL")
    assert "out of memory" in status and "OOM killer" in status
    state.on_worker_exit(pid, status)
    error = result_error(state, task_id)
    assert isinstance(error, exceptions.OutOfMemoryError) and "oom_kill count" in str(error)


def test_a_plain_sigkill_with_no_oom_kill_is_not_called_out_of_memory(state, tmp_path):
    root = tmp_path / "cgroup"
    (root / "app").mkdir(parents=True)
    (tmp_path / "proc_cgroup").write_text("0::/app\n")
    (root / "app" / "memory.max").write_text("max\n")
    (root / "app" / "memory.events").write_text("oom_kill 3\n")
    monitor = ScriptedMonitor(state, cgroup_root=str(root), proc_cgroup=str(tmp_path / "proc_cgroup"))
    task_id = submit(state, "work", max_retries=0)
    pid = pid_running(state, task_id)
    status = monitor.on_worker_exit(pid, "killed by signal SIGKILL")
    assert status == "killed by signal SIGKILL"
    state.on_worker_exit(pid, status)
    error = result_error(state, task_id)
    assert type(error) is exceptions.WorkerCrashedError


# ------------------------------------------------------- a real agent

BUDGET = 800 * MB      # the monitor's budget for the agent's own processes
THRESHOLD = 0.5        # kill above 400 MB: idle, the agent and its workers use far less


@pytest.fixture
def budget_agent(own_cluster, monkeypatch):
    # Tasks go through the agent (a leased worker's task is retried by the driver).
    monkeypatch.setenv("LIGHTRAY_DIRECT_SUBMIT", "0")
    node = own_cluster.add_node(head=True, num_cpus=3, env={
        "LIGHTRAY_MEMORY_LIMIT_BYTES": str(BUDGET),
        "LIGHTRAY_MEMORY_USAGE_THRESHOLD": str(THRESHOLD)})
    lightray.init(address=node.address)
    return node


@lightray.remote(max_retries=2)
def hog(path, step=16 * MB, total=480 * MB):
    """Takes memory step by step past the budget, then holds it: only a kill ends it."""
    with open(path, "a") as f:
        f.write("x")
    held = []
    while sum(len(b) for b in held) < total:
        held.append(b"\x01" * step)
        time.sleep(0.01)
    time.sleep(300)
    return "never"


@pytest.mark.timeout(120)
def test_a_task_taking_memory_past_the_threshold_is_killed_retried_then_out_of_memory(
        budget_agent, tmp_path):
    path = str(tmp_path / "attempts")
    ref = hog.remote(path)
    with pytest.raises(exceptions.OutOfMemoryError) as raised:
        lightray.get(ref, timeout=100)
    message = str(raised.value)
    assert "hog()" in message and "MiB" in message and f"threshold of {THRESHOLD:g}" in message
    assert attempts(path) == 3                     # max_retries=2: every attempt killed
    # The agent and this driver are untouched, and work goes on.
    assert budget_agent.process.poll() is None
    assert lightray.get(lightray.remote(lambda: os.getpid()).remote(), timeout=30) != os.getpid()


@pytest.mark.timeout(120)
def test_with_direct_submission_a_task_killed_for_memory_also_ends_in_out_of_memory_error(
        own_cluster, tmp_path):
    # Whether it ran on a worker lent to this driver or through the agent.
    node = own_cluster.add_node(head=True, num_cpus=2, env={
        "LIGHTRAY_MEMORY_LIMIT_BYTES": str(BUDGET),
        "LIGHTRAY_MEMORY_USAGE_THRESHOLD": str(THRESHOLD)})
    lightray.init(address=node.address)
    lightray.get(lightray.remote(lambda: 1).remote(), timeout=30)    # a lease, likely
    path = str(tmp_path / "attempts")
    with pytest.raises(exceptions.OutOfMemoryError) as raised:
        lightray.get(hog.options(max_retries=0).remote(path), timeout=100)
    assert "hog()" in str(raised.value) and "memory monitor" in str(raised.value)
    assert attempts(path) == 1
    assert node.process.poll() is None


@lightray.remote(max_retries=0)
def last_attempt(path):
    import time
    open(path, "w").close()
    time.sleep(3)
    return "done"


@lightray.remote
class Keeper:
    def __init__(self):
        self.pid = os.getpid()

    def who(self):
        return self.pid


@pytest.mark.timeout(120)
def test_a_task_on_its_last_attempt_and_an_actor_are_spared_while_a_retriable_task_is_killed(
        budget_agent, tmp_path):
    keeper = Keeper.remote()
    keeper_pid = lightray.get(keeper.who.remote(), timeout=30)
    started = str(tmp_path / "started")
    spared = last_attempt.remote(started)
    assert wait_for_file(started, timeout=30)
    ref = hog.options(max_retries=1).remote(str(tmp_path / "attempts"))
    with pytest.raises(exceptions.OutOfMemoryError):
        lightray.get(ref, timeout=100)
    assert lightray.get(spared, timeout=30) == "done"
    assert lightray.get(keeper.who.remote(), timeout=30) == keeper_pid
    assert wait_for(lambda: attempts(str(tmp_path / "attempts")) == 2)


@lightray.remote(max_restarts=0)
class Hoarder:
    def hoard(self, step=16 * MB, total=480 * MB):
        import time
        self.held = []
        while sum(len(b) for b in self.held) < total:
            self.held.append(b"\x01" * step)
            time.sleep(0.01)
        time.sleep(300)


@pytest.mark.timeout(120)
def test_an_actor_is_killed_when_nothing_else_is_left_and_its_death_names_memory(budget_agent):
    hoarder = Hoarder.remote()
    with pytest.raises(exceptions.ActorDiedError) as raised:
        lightray.get(hoarder.hoard.remote(), timeout=100)
    assert "out of memory" in str(raised.value) and "memory monitor" in str(raised.value)
    assert budget_agent.process.poll() is None


# ------------------------------------------------------- lightray status

@pytest.mark.timeout(120)
def test_status_shows_each_nodes_memory_use_as_its_heartbeats_tell_it(own_cluster):

    head = own_cluster.add_node(head=True)
    other = own_cluster.add_node()
    lightray.init(address=head.address)
    own_cluster.wait_for_nodes(2)
    assert wait_for(lambda: all(n["store_capacity"] and n["memory_fraction"] > 0
                                for n in lightray.nodes()))
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("LIGHTRAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "lightray.cli", "status", "--address",
                          head.address], capture_output=True, text=True, env=env, timeout=90)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].split()[-1] == "MEMORY"
    for node in (head, other):
        (line,) = [x for x in lines if x.startswith(node.node_id)]
        shown = line.split()[-1]
        assert shown.endswith("%") and 0 <= int(shown[:-1]) <= 100


# ------------------------------------------- an agent in a real memory cgroup

def _writable_memory_cgroup():
    """This process's cgroup v1 memory directory, if we may make children in it."""
    from lightray import memory_limits
    _, v1 = memory_limits.cgroup_paths()
    base = os.path.join(memory_limits.CGROUP_ROOT, "memory")
    if v1 is None or not os.path.isdir(base):
        return None
    directory = os.path.join(base, v1.strip("/"))
    return directory if os.access(directory, os.W_OK) else None


needs_cgroup = pytest.mark.skipif(
    _writable_memory_cgroup() is None,
    reason="no writable cgroup v1 memory controller for this process here")


@pytest.fixture
def cgroup_agent(own_cluster, monkeypatch):
    """start(limit, **env): a real agent (2 CPUs, default store size) run
    inside a new memory cgroup of limit bytes; this process attaches to it
    from outside. The cgroup is removed afterwards."""
    monkeypatch.setenv("LIGHTRAY_DIRECT_SUBMIT", "0")
    made = []

    def start(limit, **env):
        directory = os.path.join(_writable_memory_cgroup(), f"lightray-test-{os.getpid()}")
        os.mkdir(directory)
        made.append(directory)
        with open(os.path.join(directory, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit))
        agent = [sys.executable, "-m", "lightray.agent", "--num-cpus", "2", "--head",
                 "--port", "0"]
        command = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', directory] + agent
        environment = dict(os.environ, PYTHONPATH=REPO, **env)
        environment.pop("LIGHTRAY_OBJECT_STORE_MEMORY", None)
        node = own_cluster.start(command, environment, head=True)
        lightray.init(address=node.address)
        return node

    yield start
    if lightray.is_initialized():
        lightray.shutdown()
    own_cluster.shutdown()
    for directory in made:
        deadline = time.monotonic() + 15
        while True:
            try:
                os.rmdir(directory)
                break
            except OSError:      # EBUSY until its last process is gone
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@needs_cgroup
@pytest.mark.timeout(120)
def test_in_a_memory_cgroup_the_store_is_sized_from_its_limit_and_the_monitor_watches_it(
        cgroup_agent, tmp_path):
    from lightray.config import OBJECT_STORE_FRACTION
    limit = 800 * MB
    node = cgroup_agent(limit, LIGHTRAY_MEMORY_USAGE_THRESHOLD="0.5")
    (info,) = [n for n in lightray.nodes() if n["node_id"] == node.node_id]
    assert info["store_capacity"] == int(limit * OBJECT_STORE_FRACTION)
    path = str(tmp_path / "attempts")
    # 480 MB held stays under the cgroup's limit: only the monitor (at 50 %) acts.
    with pytest.raises(exceptions.OutOfMemoryError) as raised:
        lightray.get(hog.options(max_retries=1).remote(path), timeout=100)
    assert "memory monitor" in str(raised.value) and "threshold of 0.5" in str(raised.value)
    assert attempts(path) == 2
    assert node.process.poll() is None


@needs_cgroup
@pytest.mark.timeout(120)
def test_a_worker_killed_by_the_kernels_oom_killer_is_named_out_of_memory(cgroup_agent, tmp_path):
    # The monitor is off: the kernel acts at the cgroup's limit, and picks the
    # worker (its OOM score is raised), not the agent.
    node = cgroup_agent(400 * MB, LIGHTRAY_MEMORY_MONITOR_INTERVAL_S="0")
    path = str(tmp_path / "attempts")
    with pytest.raises(exceptions.OutOfMemoryError) as raised:
        lightray.get(hog.options(max_retries=1).remote(path), timeout=100)
    assert "OOM killer" in str(raised.value) and "oom_kill count rose" in str(raised.value)
    assert attempts(path) == 2
    assert node.process.poll() is None
    assert lightray.get(lightray.remote(lambda: 7).remote(), timeout=30) == 7
