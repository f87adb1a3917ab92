"""When actors end: the last handle going away stops an actor that is neither
named nor detached; a detached actor outlives the driver that created it
while its agent runs; a named one dies with its creator."""
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import available_cpus, pid_alive, wait_for, wait_for_file

import lightray

pytestmark = pytest.mark.both_modes


@lightray.remote
class Counter:
    def __init__(self):
        self.value = 0

    def inc(self, by=1):
        self.value += by
        return self.value

    def pid(self):
        return os.getpid()


@lightray.remote
def inc_through(counter, by):
    return lightray.get(counter.inc.remote(by), timeout=20)


@lightray.remote
def inc_through_list(counters, by):
    return lightray.get(counters[0].inc.remote(by), timeout=20)


@lightray.remote
def inc_when_released(counter, started, release):
    open(started, "w").close()
    deadline = time.monotonic() + 20
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    return lightray.get(counter.inc.remote(1), timeout=20)


# --------------------------------------------------------- handles going away


@pytest.mark.process_only("watches the actor's process end (local mode: test_local_mode_control.py)")
@pytest.mark.timeout(30)
def test_dropping_the_last_handle_stops_the_actor_and_frees_its_cpu(runtime):
    counter = Counter.options(num_cpus=1).remote()
    pid = lightray.get(counter.pid.remote(), timeout=20)
    assert wait_for(lambda: available_cpus() == 1.0), lightray.available_resources()
    del counter
    assert wait_for(lambda: not pid_alive(pid), timeout=10), f"actor process {pid} still runs"
    assert wait_for(lambda: available_cpus() == 2.0), lightray.available_resources()


@pytest.mark.process_only("watches the actor's process end (local mode: test_local_mode_control.py)")
@pytest.mark.timeout(30)
def test_handles_passed_to_finished_tasks_do_not_keep_the_actor(runtime):
    counter = Counter.options(num_cpus=1).remote()
    pid = lightray.get(counter.pid.remote(), timeout=20)
    assert lightray.get(inc_through.remote(counter, 2), timeout=20) == 2
    assert lightray.get(inc_through_list.remote([counter], 3), timeout=20) == 5
    del counter
    assert wait_for(lambda: not pid_alive(pid), timeout=10), f"actor process {pid} still runs"
    assert wait_for(lambda: available_cpus() == 2.0), lightray.available_resources()


@pytest.mark.process_only("watches the actor's process end (local mode: test_local_mode_control.py)")
@pytest.mark.timeout(30)
def test_handle_held_by_a_running_task_keeps_the_actor_alive(runtime, tmp_path):
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    counter = Counter.remote()
    pid = lightray.get(counter.pid.remote(), timeout=20)
    ref = inc_when_released.remote(counter, started, release)
    assert wait_for_file(started)
    del counter
    # The driver's DEC travels ahead of this request, so the agent has seen
    # it when the answer comes; then give a wrongful stop time to happen.
    lightray.available_resources()
    time.sleep(0.5)
    assert pid_alive(pid), "the actor stopped while a running task held its handle"
    open(release, "w").close()
    assert lightray.get(ref, timeout=20) == 1
    # The task finished: its handle was the last one.
    assert wait_for(lambda: not pid_alive(pid), timeout=10), f"actor process {pid} still runs"


# ------------------------------------------------ detached and named actors


FIRST_DRIVER = textwrap.dedent("""
    import os
    import sys

    import lightray

    lightray.init(address=sys.argv[1])

    @lightray.remote
    class Keeper:
        def __init__(self, label):
            self.label = label
            self.items = []

        def add(self, item):
            self.items.append(item)
            return len(self.items)

        def state(self):
            return self.label, list(self.items)

        def pid(self):
            return os.getpid()

    keeper = Keeper.options(name="keeper", namespace="lifetime-tests",
                            lifetime="detached").remote("detached")
    temporary = Keeper.options(name="temporary", namespace="lifetime-tests").remote("named")
    assert lightray.get(keeper.add.remote("from the first driver"), timeout=20) == 1
    assert lightray.get(temporary.add.remote("gone soon"), timeout=20) == 1
    print(lightray.get(keeper.pid.remote(), timeout=20),
          lightray.get(temporary.pid.remote(), timeout=20), flush=True)
""")


@pytest.fixture
def standalone_agent(repo_root):
    """A lightray agent of its own (not embedded): yields its ipc:// address;
    detaches this process and stops the agent (SIGTERM) afterwards."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [repo_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    agent = subprocess.Popen([sys.executable, "-m", "lightray.agent", "--num-cpus", "2"],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                             cwd=repo_root, env=env)
    try:
        line = agent.stdout.readline()
        match = re.match(r"lightray agent \S+ listening on (ipc://\S+)$", line.strip())
        assert match, f"unexpected first line from the agent: {line!r}"
        yield match.group(1), env
    finally:
        try:
            if lightray.is_initialized():
                lightray.shutdown()
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
            agent.stdout.close()


@pytest.mark.timeout(60)
def test_detached_actor_outlives_its_driver_and_named_one_does_not(standalone_agent, repo_root):
    address, env = standalone_agent
    first = subprocess.run([sys.executable, "-c", FIRST_DRIVER, address], check=False,
                           cwd=repo_root, env=env, capture_output=True, text=True, timeout=40)
    assert first.returncode == 0, first.stderr
    keeper_pid, temporary_pid = map(int, first.stdout.split())

    lightray.init(address=address)
    # A named actor that is not detached dies with the driver that created it.
    assert wait_for(lambda: not pid_alive(temporary_pid), timeout=10), (
        f"named actor process {temporary_pid} outlived its driver")
    with pytest.raises(ValueError) as ei:
        lightray.get_actor("temporary", namespace="lifetime-tests")
    assert "temporary" in str(ei.value)

    # The detached one is still there, with its state.
    keeper = lightray.get_actor("keeper", namespace="lifetime-tests")
    assert lightray.get(keeper.state.remote(), timeout=20) == (
        "detached", ["from the first driver"])
    assert lightray.get(keeper.add.remote("from the second driver"), timeout=20) == 2
    assert lightray.get(keeper.pid.remote(), timeout=20) == keeper_pid

    # Dropping this driver's handle and detaching does not stop it either.
    del keeper
    lightray.shutdown()
    third = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import sys
            import lightray
            lightray.init(address=sys.argv[1])
            keeper = lightray.get_actor("keeper", namespace="lifetime-tests")
            print(lightray.get(keeper.state.remote(), timeout=20)[1])
        """), address], check=False, cwd=repo_root, env=env, capture_output=True, text=True,
        timeout=40)
    assert third.returncode == 0, third.stderr
    assert third.stdout.strip() == "['from the first driver', 'from the second driver']"
    assert pid_alive(keeper_pid)


CRASHING_DRIVER = textwrap.dedent("""
    import os
    import signal
    import sys

    import lightray

    lightray.init(address=sys.argv[1])

    @lightray.remote
    class Doomed:
        def pid(self):
            return os.getpid()

    named = Doomed.options(name="doomed", namespace="lifetime-tests").remote()
    unnamed = Doomed.options(num_cpus=1).remote()
    print(lightray.get(named.pid.remote(), timeout=20),
          lightray.get(unnamed.pid.remote(), timeout=20), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)      # no shutdown(), no goodbye
""")


@pytest.mark.timeout(60)
def test_actors_of_a_driver_killed_by_sigkill_end_with_it(standalone_agent, repo_root):
    address, env = standalone_agent
    crashed = subprocess.run([sys.executable, "-c", CRASHING_DRIVER, address], check=False,
                             cwd=repo_root, env=env, capture_output=True, text=True, timeout=40)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    named_pid, unnamed_pid = map(int, crashed.stdout.split())
    # Its named (not detached) actor dies with it; the unnamed one has no
    # handle left in any live process.
    assert wait_for(lambda: not pid_alive(named_pid), timeout=10), (
        f"named actor process {named_pid} outlived its SIGKILLed driver")
    assert wait_for(lambda: not pid_alive(unnamed_pid), timeout=10), (
        f"actor process {unnamed_pid} outlived the only process that held a handle to it")
    lightray.init(address=address)
    with pytest.raises(ValueError):
        lightray.get_actor("doomed", namespace="lifetime-tests")
    assert wait_for(lambda: available_cpus() == 2.0), lightray.available_resources()
