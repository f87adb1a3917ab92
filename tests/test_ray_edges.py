"""Edges of the Ray API that Ray programs (and Ray's own tests) rely on."""
import os
import subprocess
import sys

import pytest
from conftest import available_cpus, pid_alive, wait_for

import lightray
from lightray import exceptions
from lightray.actor import exit_actor
from lightray.util import ActorPool

pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------------ wait

def test_wait_of_no_refs_returns_two_empty_lists(runtime):
    assert lightray.wait([]) == ([], [])
    assert lightray.wait([], num_returns=1, timeout=0) == ([], [])


def test_wait_of_no_refs_needs_no_runtime():
    assert not lightray.is_initialized()
    assert lightray.wait([]) == ([], [])
    assert not lightray.is_initialized()


# ------------------------------------------------------------ ActorPool

@lightray.remote
class Splitter:
    @lightray.method(num_returns=2)
    def divmod(self, value):
        return divmod(value, 10)

    def pid(self):
        return os.getpid()


def test_actor_pool_maps_a_method_of_several_returns_to_lists_of_values(runtime):
    pool = ActorPool([Splitter.remote(), Splitter.remote()])
    values = [3, 17, 42, 99, 100]
    results = list(pool.map(lambda actor, v: actor.divmod.remote(v), values))
    assert results == [list(divmod(v, 10)) for v in values]
    unordered = list(pool.map_unordered(lambda actor, v: actor.divmod.remote(v), values))
    assert sorted(map(tuple, unordered)) == sorted(divmod(v, 10) for v in values)


def test_actor_pool_submit_of_several_returns_gives_them_back_with_get_next(runtime):
    pool = ActorPool([Splitter.remote()])
    for value in (25, 31, 47):
        pool.submit(lambda actor, v: actor.divmod.remote(v), value)
    assert [pool.get_next(timeout=30) for _ in range(3)] == [[2, 5], [3, 1], [4, 7]]
    assert not pool.has_next()


def test_actor_pool_refuses_fn_returning_an_empty_list(runtime):
    pool = ActorPool([Splitter.remote()])
    with pytest.raises(TypeError, match="must return the ObjectRef"):
        pool.submit(lambda actor, v: [], 1)
    assert pool.has_free()


# ----------------------------------------------------------- exit_actor

@lightray.remote(max_restarts=3)
class Quitter:
    def __init__(self):
        self.calls = 0

    def pid(self):
        return os.getpid()

    def quit(self):
        try:
            exit_actor()
        except Exception:   # exit_actor is not an Exception: this must not stop it
            return "caught"
        return "not reached"

    def count(self):
        self.calls += 1
        return self.calls


@lightray.remote
class AsyncQuitter:
    async def quit(self):
        exit_actor()

    async def ping(self):
        return "pong"


def test_exit_actor_stops_the_actor_for_good_even_with_restarts_left(runtime):
    actor = Quitter.remote()
    pid = lightray.get(actor.pid.remote(), timeout=30)
    with pytest.raises(exceptions.ActorDiedError, match="exit_actor"):
        lightray.get(actor.quit.remote(), timeout=30)
    # Not restarted (it had 3 restarts left): later calls fail too.
    with pytest.raises(exceptions.ActorDiedError, match="exit_actor"):
        lightray.get(actor.count.remote(), timeout=30)
    assert wait_for(lambda: not pid_alive(pid), timeout=15)
    assert wait_for(lambda: available_cpus() == 2.0, timeout=15)


def test_exit_actor_stops_an_async_actor(runtime):
    actor = AsyncQuitter.remote()
    assert lightray.get(actor.ping.remote(), timeout=30) == "pong"
    with pytest.raises(exceptions.ActorDiedError, match="exit_actor"):
        lightray.get(actor.quit.remote(), timeout=30)
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(actor.ping.remote(), timeout=30)


def test_exit_actor_outside_an_actor_is_refused(runtime):
    with pytest.raises(TypeError, match="inside an actor"):
        exit_actor()

    @lightray.remote
    def in_a_task():
        exit_actor()

    with pytest.raises(TypeError, match="inside an actor"):
        lightray.get(in_a_task.remote(), timeout=30)


# --------------------------------------------------- available_resources

@lightray.remote(num_cpus=2)
class Hog:
    def ready(self):
        return True


def test_available_resources_leaves_out_resources_with_nothing_left(runtime):
    assert lightray.available_resources()["CPU"] == 2.0
    hog = Hog.remote()
    assert lightray.get(hog.ready.remote(), timeout=30)
    assert "CPU" not in lightray.available_resources()
    assert lightray.cluster_resources()["CPU"] == 2.0   # the total still names it
    lightray.kill(hog)
    assert wait_for(lambda: lightray.available_resources().get("CPU") == 2.0, timeout=15)


# ------------------------------------------------------ refused at once

def test_remote_on_an_async_def_function_is_refused_naming_the_alternatives():
    async def fetch():
        return 1

    with pytest.raises(TypeError, match=r"async def .*fetch.*asyncio.run.*actor"):
        lightray.remote(fetch)
    with pytest.raises(TypeError, match="async def"):
        lightray.remote(num_cpus=1)(fetch)

    async def stream():
        yield 1

    with pytest.raises(TypeError, match="async def"):
        lightray.remote(stream)


@pytest.mark.parametrize("option", ["name", "namespace"])
@pytest.mark.parametrize("value", [7, b"bytes", ("a",)])
def test_a_non_str_actor_name_or_namespace_raises_type_error(option, value):
    with pytest.raises(TypeError, match=f"{option} must be a str"):
        Quitter.options(**{option: value, "name": "ok"} if option == "namespace"
                        else {option: value})


def test_an_empty_actor_name_is_still_a_value_error():
    with pytest.raises(ValueError, match="non-empty"):
        Quitter.options(name="")


def test_get_actor_and_init_refuse_a_non_str_namespace_with_type_error():
    with pytest.raises(TypeError):
        lightray.get_actor("x", namespace=3)
    with pytest.raises(TypeError, match="namespace must be a str"):
        lightray.init(namespace=3)
    assert not lightray.is_initialized()


# ------------------------------------------------------------ tracebacks

@lightray.remote
def divide_by_zero(x):
    return x // 0


@lightray.remote
class Divider:
    def divide(self, x):
        return x / 0


def test_a_failing_task_traceback_names_the_users_file_and_line(runtime):
    with pytest.raises(ZeroDivisionError) as info:
        lightray.get(divide_by_zero.remote(1), timeout=30)
    text = str(info.value)
    assert f'File "{__file__}", line {_line_of("return x // 0")}, in divide_by_zero' in text
    assert "return x // 0" in text
    assert "<dynamic-code>" not in text


def test_a_failing_actor_method_traceback_names_the_users_file_and_line(runtime):
    divider = Divider.remote()
    with pytest.raises(ZeroDivisionError) as info:
        lightray.get(divider.divide.remote(1), timeout=30)
    line = _line_of("return x / 0")
    assert f'File "{__file__}", line {line}, in divide' in str(info.value)


def _line_of(source: str) -> int:
    """The number of the one line of this file that is source."""
    with open(__file__) as file:
        numbers = [n for n, line in enumerate(file, 1) if line.strip() == source]
    assert len(numbers) == 1
    return numbers[0]


SCRIPT = '''
import lightray

@lightray.remote
def fails():
    raise ValueError("from the script")

lightray.init(num_cpus=1)
try:
    lightray.get(fails.remote(), timeout=60)
except ValueError as error:
    print(error)
lightray.shutdown()
'''


def test_a_script_s_task_traceback_names_the_script_and_shows_its_line(tmp_path):
    # A function of __main__ travels by value: its code keeps the script's name.
    script = tmp_path / "my_script.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=90, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f'File "{script}", line 6, in fails' in done.stdout
    assert 'raise ValueError("from the script")' in done.stdout
    assert "<dynamic-code>" not in done.stdout


def test_exit_actor_on_another_node_is_final_for_its_callers(cluster):
    other = cluster.nodes[1]
    actor = Quitter.options(
        scheduling_strategy=lightray.NodeAffinity(other.node_id)).remote()
    assert lightray.get(actor.count.remote(), timeout=30) == 1
    with pytest.raises(exceptions.ActorDiedError, match="exit_actor"):
        lightray.get(actor.quit.remote(), timeout=30)
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(actor.count.remote(), timeout=30)
