"""The agent's state (lightray.agent.state and the parts it composes) does no
I/O: no sockets, no processes, no files. It takes messages and returns
instructions; lightray.agent.server carries them out.

Checked two ways, in a fresh interpreter where lightray/__init__ (which
starts the public API, sockets and all) is never run:
* importing lightray.agent.state with socket, zmq, subprocess,
  multiprocessing, select, selectors, shutil and signal refused to any
  lightray module, then driving a driver, a worker, tasks, a put, a spill and a
  kill through it with open, os.open, os.kill, os.fork, os.unlink and
  os.remove made to raise, and checking the instructions it returns;
* reading the source of every lightray.agent module that import loaded (the
  state and its parts) and of lightray.states: no import of those modules and
  no call of open() or of os.kill / os.fork / os.unlink / ... anywhere, so a
  call on a path the first test does not drive is caught too.
"""
import ast
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BLOCKED_IMPORTS = ("socket", "zmq", "subprocess", "multiprocessing", "select", "selectors",
                   "shutil", "signal")
# Modules of lightray that do I/O: the state must not even load them.
IO_MODULES = ("lightray.agent.server", "lightray.agent.cli", "lightray.agent.session",
              "lightray.transport.sockets", "lightray.transport.mesh",
              "lightray.transport.stream", "lightray.store.shm", "lightray.store.spill",
              "lightray.store.pool", "lightray.store.transfer", "lightray.store.control",
              "lightray.api", "lightray.client", "lightray.worker")
# Calls that touch files or processes, as os.<name>(...) or <name>(...).
IO_CALLS = {"open", "kill", "fork", "unlink", "remove", "rename", "replace", "rmdir",
            "mkdir", "makedirs", "system", "popen", "waitpid", "execv", "execvp", "killpg"}

PROGRAM = r'''
import builtins, json, os, sys, types

root, blocked = sys.argv[1], set(sys.argv[2].split(","))
real_import = builtins.__import__

def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__") or ""
    if level == 0 and importer.startswith("lightray") and name.partition(".")[0] in blocked:
        raise ImportError(f"{importer} imports {name}: the agent's state does no I/O")
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = guarded_import
package = types.ModuleType("lightray")        # lightray/__init__ is not run
package.__path__ = [os.path.join(root, "lightray")]
sys.modules["lightray"] = package

from lightray.agent import instructions as i
from lightray.agent.state import AgentState
from lightray.ids import IdMaker, return_ids
from lightray.serialization import INLINE, SHARED
from lightray.transport import messages as m

def refuse(*args, **kwargs):
    raise AssertionError("the agent's state touched a file or a process")

for name in ("open", "kill", "fork", "unlink", "remove", "rename", "replace", "system"):
    if hasattr(os, name):
        setattr(os, name, refuse)
builtins.open = refuse

def kinds(instructions):
    return [type(x).__name__ for x in instructions]

seen = {}
state = AgentState(node_id="node0000", session="s", resources={"CPU": 1.0},
                   pipeline_depth=2, max_workers=4, store_capacity=100 << 20,
                   spill_dir="/nonexistent/spill", spill_threshold=0.5, segment_prefix="lr_s_")
driver = b"driver01"
state.on_hello(driver, "driver", 1, "")
state.initial_workers(1)
start = state.take_instructions()
seen["start"] = kinds(start)
(spawn,) = [x for x in start if type(x) is i.Spawn]
state.on_spawned(spawn.worker_id, 4242)
state.on_hello(spawn.worker_id.encode(), "worker", 4242, spawn.worker_id)
state.take_instructions()

ids = IdMaker()
task_id = ids.task_id()
spec = (task_id, b"f" * 16, "work", None, [], [], 1, {"CPU": 1.0}, 0, False, None, 0, None)
state.handle(driver, [(m.EXPORT, b"f" * 16, b"code"), (m.SUBMIT, spec)])
state.turn()
out = state.take_instructions()
seen["submit"] = kinds(out)
(execute,) = [x for x in out if type(x) is i.Send]
seen["exec_to"] = execute.identity.decode()
seen["exec_op"] = execute.ops[0][0] == m.EXEC

state.handle(spawn.worker_id.encode(), [(m.DONE, task_id, [(INLINE, b"42")], [[]], False)])
state.turn()
out = state.take_instructions()
seen["done"] = kinds(out)
seen["ready"] = [x.ops for x in out if type(x) is i.Send] == [
    [(m.READY, [(return_ids(task_id, 1)[0], (INLINE, b"42"))])]]

big = []
for n in range(3):
    object_id = ids.task_id() + b"\x00\x00"
    big.append(object_id)
    state.handle(driver, [(m.RESERVE, n + 1, 30 << 20, object_id)])
    state.turn()
    state.handle(driver, [(m.PUT, object_id, (SHARED, (f"lr_s_{n}", 30 << 20, 10, ())), [])])
    state.turn()
out = state.take_instructions()
seen["puts"] = kinds(out)
seen["spilled"] = sorted(x.object_id.hex() for x in out if type(x) is i.SpillJob)
state.handle(driver, [(m.DEC, [big[2]])])
seen["dec"] = [x.name for x in state.take_instructions() if type(x) is i.FreeSegment]

second = ids.task_id()
spec = (second, b"f" * 16, "work", None, [], [], 1, {"CPU": 1.0}, 0, False, None, 0, None)
state.handle(driver, [(m.SUBMIT, spec)])
state.turn()
state.take_instructions()
state.handle(driver, [(m.CANCEL, return_ids(second, 1)[0], True)])
seen["cancel"] = [tuple(x) for x in state.take_instructions() if type(x) is i.Kill]
state.on_worker_exit(4242, "killed by signal SIGKILL")
state.turn()
seen["after_exit"] = kinds(state.take_instructions())
seen["blocked_loaded"] = sorted(name for name in sys.modules
                                if name.partition(".")[0] in blocked
                                and "lightray" in str(getattr(sys.modules[name], "__file__", "")))
seen["lightray_modules"] = sorted(
    (name, getattr(module, "__file__", None)) for name, module in sys.modules.items()
    if name.startswith("lightray") and module is not None)
print(json.dumps(seen))
'''


def _drive() -> dict:
    done = subprocess.run([sys.executable, "-c", PROGRAM, ROOT, ",".join(BLOCKED_IMPORTS)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_agent_state_runs_with_sockets_processes_and_files_blocked():
    seen = _drive()
    assert seen["start"] == ["Send", "Spawn"]                 # WELCOME, then fork a worker
    assert seen["submit"] == ["Send"] and seen["exec_op"]      # one EXEC frame to the worker
    assert seen["exec_to"].endswith("r")
    assert seen["done"] == ["Send"] and seen["ready"]          # READY pushed to the owner
    assert "SpillJob" in seen["puts"] and len(seen["spilled"]) >= 1
    assert seen["dec"] == ["lr_s_2"]                            # its segment is given back
    assert seen["cancel"] == [[4242, "SIGKILL"]]               # force: its worker is killed
    assert seen["after_exit"] == ["Send"]                       # the cancellation, to the owner


def test_agent_state_modules_load_no_io_module_and_call_no_file_or_process_function():
    seen = _drive()
    loaded = dict(seen["lightray_modules"])
    assert "lightray.agent.state" in loaded
    for name in loaded:
        assert not any(name == io or name.startswith(io + ".") for io in IO_MODULES), name
    offenders = []
    for name, path in loaded.items():
        if path is None or not (name.startswith("lightray.agent") or name == "lightray.states"):
            continue   # (lower modules it uses, e.g. resources, are checked at run time above)
        tree = ast.parse(open(path).read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                called = (func.id if isinstance(func, ast.Name)
                          else func.attr if isinstance(func, ast.Attribute)
                          and isinstance(func.value, ast.Name) and func.value.id in ("os", "io")
                          else None)
                if called in IO_CALLS:
                    offenders.append(f"{name}:{node.lineno} {called}()")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                           else [node.module or ""] if node.level == 0 else [])
                for module in modules:
                    if module.partition(".")[0] in BLOCKED_IMPORTS:
                        offenders.append(f"{name}:{node.lineno} import {module}")
    assert offenders == []
