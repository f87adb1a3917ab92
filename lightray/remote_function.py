"""``@lightray.remote`` on functions: the submit path of a task.

    f.remote(*args) ── serialize args (top-level refs -> Dep markers,
                        large values -> implicit put into shared memory)
                    ── [EXPORT once] + SUBMIT ──▶ agent        (one send, no reply awaited)
                    ◀─ ObjectRef(s) for the returns, counted by the agent already

Everything is decided in the calling thread; nothing waits for an answer.
"""
from __future__ import annotations

import functools
import hashlib
import inspect

import numpy as np

from . import runtime_env as runtime_envs
from . import serialization
from .config import inline_threshold
from .object_ref import ObjectRef
from .options import TaskOptions
from .runtime import client_for_submission
from .runtime_context import submitting_driver
from .task_spec import Dep, new_task_spec


class _ExportedFunction:
    """The pickled function and its content id, computed once per function."""

    __slots__ = ("function", "name", "function_id", "function_bytes", "_in_env")

    def __init__(self, function, name: str | None = None):
        self.function = function
        self.name = name or getattr(function, "__qualname__", None) or repr(function)
        self.function_id = None
        self.function_bytes = None
        self._in_env = None

    def in_env(self, runner) -> "_ExportedFunction":
        """The function as run inside a runtime environment: runner(function,
        env spec, *package values, *args) (lightray.runtime_env), exported once."""
        if self._in_env is None:
            self._in_env = _ExportedFunction(functools.partial(runner, self.function), self.name)
        return self._in_env

    def ensure_pickled(self) -> None:
        if self.function_bytes is not None:
            return
        try:
            data = serialization.dumps_function(self.function)
        except Exception as error:
            raise TypeError(f"remote function {self.name} cannot be serialized: {error} "
                            "(it captures or references an unpicklable object)") from error
        self.function_id = hashlib.blake2b(data, digest_size=16).digest()
        self.function_bytes = data


class RemoteFunction:
    """A function made remote; call ``.remote(...)`` to run it as a task."""

    def __init__(self, function, options: dict, exported: _ExportedFunction | None = None):
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            name = getattr(function, "__qualname__", repr(function))
            raise TypeError(
                f"@lightray.remote cannot run async def {name}() as a task: a task runs in a "
                f"worker's main thread, with no event loop. Make it a plain def that calls "
                f"asyncio.run(...), or make it a method of an actor class (async methods make "
                f"an async actor)")
        self._exported = exported or _ExportedFunction(function)
        self._options_dict = dict(options)
        self._options = TaskOptions(self._options_dict)
        functools.update_wrapper(self, function, updated=())

    def __call__(self, *args, **kwargs):
        name = self._exported.name.rsplit(".", 1)[-1]
        raise TypeError(f"remote function {name} cannot be called directly; use .remote() "
                        f"to run it as a task: {name}.remote(...)")

    def options(self, **options) -> "RemoteFunction":
        """A copy with these options overriding the decorator's."""
        merged = {**self._options_dict, **options}
        return RemoteFunction(self._exported.function, merged, self._exported)

    def remote(self, *args, **kwargs):
        client = client_for_submission()
        exported = self._exported
        options = self._options
        if getattr(client, "runs_in_process", False):   # local mode (lightray.local)
            refs = client.submit_function(exported, options, args, kwargs)
            return refs[0] if options.num_returns == 1 else (refs or None)
        env = runtime_envs.effective(options.runtime_env)
        if env is not None:
            exported = exported.in_env(runtime_envs.run_task_in_env)
            args = env_arguments(client, env) + args
        exported.ensure_pickled()
        args_bytes, deps, contained, keep_alive = _serialize_arguments(
            client, exported.name, args, kwargs)
        task_id = client.ids.task_id()
        retry = options.retry_exceptions
        if isinstance(retry, tuple):
            retry = serialization.dumps_function(retry)
        spec = new_task_spec(task_id, exported.function_id, exported.name, args_bytes, deps,
                             contained, num_returns=options.num_returns,
                             resources=options.request, max_retries=options.max_retries,
                             retry_exceptions=retry, strategy=options.strategy,
                             driver=submitting_driver())
        refs = client.submit(spec, exported.function_id, exported.function_bytes)
        del keep_alive  # implicit puts: the agent pinned them on SUBMIT
        if options.num_returns == 1:
            return refs[0]
        if options.num_returns == 0:
            return None
        return refs


_package_refs: dict = {}   # package hash -> (client, ObjectRef): each put once per session


def env_arguments(client, env) -> tuple:
    """(env spec, ref of each package): the leading arguments of a task or
    actor run in env (lightray.runtime_env); the packages travel as task
    arguments do, through the object store."""
    refs = []
    for package in env.packages():
        cached = _package_refs.get(package.digest)
        if cached is None or cached[0] is not client or client.closed:
            value = np.frombuffer(package.data, dtype=np.uint8)
            cached = _package_refs[package.digest] = (
                client, client.put_serialized(serialization.serialize(value)))
        refs.append(cached[1])
    return (env.spec(), *refs)


def _serialize_arguments(client, name: str, args: tuple, kwargs: dict):
    """(args bytes or None, dep ids, contained ids, refs to keep alive until sent)."""
    if not args and not kwargs:
        return None, [], [], None
    deps: list = []
    keep_alive: list = []

    def mark(value):
        if type(value) is ObjectRef:
            deps.append(value._id)
            return Dep(len(deps) - 1)
        return value

    marked_args = tuple(mark(a) for a in args)
    marked_kwargs = {k: mark(v) for k, v in kwargs.items()} if kwargs else {}
    serialized = _serialize_or_explain(name, (marked_args, marked_kwargs), args, kwargs)
    threshold = inline_threshold()
    if serialized.size >= threshold or serialized.buffers:
        # Large arguments go to shared memory once, like Ray's implicit put;
        # the task then reads them zero-copy.
        def spill(value):
            if type(value) is Dep:
                return value
            one = serialization.serialize(value)
            if one.size < threshold and not one.buffers:
                return value
            ref = client.put_serialized(one)
            keep_alive.append(ref)
            deps.append(ref._id)
            return Dep(len(deps) - 1)

        marked_args = tuple(spill(a) for a in marked_args)
        marked_kwargs = {k: spill(v) for k, v in marked_kwargs.items()}
        serialized = serialization.serialize_inline((marked_args, marked_kwargs))
    return serialized.inband, deps, serialized.contained, keep_alive


def _serialize_or_explain(name: str, value, args: tuple, kwargs: dict):
    try:
        return serialization.serialize(value)
    except Exception as error:
        for position, argument in list(enumerate(args)) + list(kwargs.items()):
            try:
                serialization.serialize(argument)
            except Exception as inner:
                where = f"argument {position}" if isinstance(position, int) else f"argument {position!r}"
                raise TypeError(
                    f"could not serialize {where} of {name}(): {type(argument).__name__} object "
                    f"{_short_repr(argument)} cannot be pickled ({inner})") from inner
        raise TypeError(f"could not serialize the arguments of {name}(): {error}") from error


def _short_repr(value) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 100 else text[:97] + "..."
