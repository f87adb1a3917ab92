"""``@lightray.remote`` on classes: actor classes, handles and methods.

    Counter.remote(*args) ── ACTOR_CREATE ──▶ agent: places it, forks its own worker,
                                              runs __init__ there (lightray.agent.actors)
    handle.inc.remote(x)  ── ACTOR_CALL ────▶ the actor's worker, straight from the caller
                          ◀── DIRECT_DONE ───  (lightray.client.actor_caller, lightray.worker.actors)

A handle is an ObjectRef in disguise: it holds a ref to the actor's *handle
object* in the agent's object table, so handles are counted across processes
exactly like refs (passed to tasks, put inside values). When the last one
goes, the agent stops the actor, unless it is named or detached.
"""
from __future__ import annotations

import inspect

from .exceptions import RuntimeNotRunningError
from .object_ref import ObjectRef
from . import runtime_env as runtime_envs
from .options import check_option_names, refuse_memory
from .remote_function import _ExportedFunction, _serialize_arguments, env_arguments
from .resources import make_request
from .runtime import client_for_submission, namespace_for
from .runtime_context import state as context_state, submitting_driver
from .scheduling import encode_strategy
from .task_spec import new_task_spec

ACTOR_OPTIONS = ("num_cpus", "num_gpus", "resources", "max_concurrency", "max_restarts",
                 "max_task_retries", "name", "namespace", "lifetime", "get_if_exists",
                 "scheduling_strategy", "memory", "runtime_env")
METHOD_OPTIONS = ("num_returns",)

DEFAULT_ASYNC_CONCURRENCY = 1000


class ActorExit(BaseException):
    """Raised by exit_actor() to unwind the calling method; the actor's worker
    catches it. A BaseException, so a method's ``except Exception`` does not
    stop the exit."""


def exit_actor() -> None:
    """Stop the actor running this method, from inside, for good.

    The call that invoked it raises ActorDiedError at its caller, as do the
    calls still queued; the actor is not restarted, even with restarts left.
    """
    if context_state.actor_id is None:
        raise TypeError("lightray.actor.exit_actor() must be called from inside an actor's "
                        "method; to stop an actor from outside use lightray.kill(handle)")
    raise ActorExit()


def method(*args, **options):
    """``@lightray.method(num_returns=k)`` on an actor method."""
    if args:
        raise TypeError("@lightray.method takes only keyword options, "
                        "e.g. @lightray.method(num_returns=2)")
    check_option_names(options, METHOD_OPTIONS)
    num_returns = _check_num_returns(options.get("num_returns", 1))

    def decorate(function):
        if not callable(function):
            raise TypeError(f"@lightray.method needs a method, got {type(function).__name__}")
        function.__lightray_num_returns__ = num_returns
        return function
    return decorate


def _check_num_returns(num_returns) -> int:
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) \
            or not 0 <= num_returns < 0xFFFF:
        raise ValueError(f"num_returns must be an int from 0 to 65534, got {num_returns!r}")
    return num_returns


def _check_count(options: dict, name: str, default: int, minimum: int) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class ActorOptions:
    """Validated options of an actor class (immutable once built).

    Resources follow Ray: without num_cpus an actor needs 1 CPU to be placed
    and holds none while it lives (so idle actors never starve tasks); with
    num_cpus it holds that many for its whole life. GPUs and custom resources
    are always held.
    """

    __slots__ = ("placement", "held", "max_concurrency", "max_restarts", "max_task_retries",
                 "name", "namespace", "detached", "get_if_exists", "strategy", "runtime_env")

    def __init__(self, options: dict, is_async: bool):
        check_option_names(options, ACTOR_OPTIONS)
        refuse_memory(options)
        self.runtime_env = runtime_envs.parse(options.get("runtime_env"))
        num_cpus = options.get("num_cpus")
        num_gpus, resources = options.get("num_gpus"), options.get("resources")
        self.placement = make_request(1 if num_cpus is None else num_cpus, num_gpus, resources)
        self.held = make_request(0 if num_cpus is None else num_cpus, num_gpus, resources)
        self.max_concurrency = _check_count(
            options, "max_concurrency", DEFAULT_ASYNC_CONCURRENCY if is_async else 1, 1)
        self.max_restarts = _check_count(options, "max_restarts", 0, -1)
        self.max_task_retries = _check_count(options, "max_task_retries", 0, -1)
        name = options.get("name")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"actor name must be a str, got {type(name).__name__}: {name!r}")
        if name == "":
            raise ValueError("actor name must be a non-empty str, got ''")
        self.name = name
        namespace = options.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, got {type(namespace).__name__}: "
                            f"{namespace!r}")
        if namespace == "":
            raise ValueError("namespace must be a non-empty str, got ''")
        self.namespace = namespace
        lifetime = options.get("lifetime")
        if lifetime not in (None, "detached", "non_detached"):
            raise ValueError(f"lifetime must be None, 'detached' or 'non_detached', "
                             f"got {lifetime!r}")
        self.detached = lifetime == "detached"
        self.get_if_exists = options.get("get_if_exists", False)
        self.strategy = encode_strategy(options.get("scheduling_strategy"))
        if not isinstance(self.get_if_exists, bool):
            raise ValueError(f"get_if_exists must be a bool, got {self.get_if_exists!r}")
        if self.get_if_exists and name is None:
            raise ValueError("get_if_exists=True needs a name= for the actor")


def _method_table(cls) -> dict:
    """{method name: (num_returns, is_async)} of the methods callers may call."""
    table = {}
    for name in dir(cls):
        if name.startswith("__") and name != "__call__":
            continue
        member = inspect.getattr_static(cls, name, None)
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if not inspect.isfunction(member):
            continue
        is_async = inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
        table[name] = (getattr(member, "__lightray_num_returns__", 1), is_async)
    return table


class ActorClass:
    """A class made remote; ``.remote(...)`` creates an actor and returns its handle."""

    def __init__(self, cls, options: dict, exported=None):
        self._cls = cls
        self._methods = _method_table(cls)
        self._is_async = any(is_async for _, is_async in self._methods.values())
        self._options_dict = dict(options)
        self._options = ActorOptions(self._options_dict, self._is_async)
        self._exported = exported or _ExportedFunction(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    def __call__(self, *args, **kwargs):
        name = self._cls.__name__
        raise TypeError(f"actor class {name} cannot be instantiated directly; use "
                        f"{name}.remote(...) to create an actor, or "
                        f"{name}.options(...).remote(...)")

    def options(self, **options) -> "ActorClass":
        """A copy with these options overriding the decorator's."""
        return ActorClass(self._cls, {**self._options_dict, **options}, self._exported)

    def remote(self, *args, **kwargs) -> "ActorHandle":
        client = client_for_submission()
        if getattr(client, "runs_in_process", False):   # local mode (lightray.local)
            runtime_envs.refuse_in_local_mode(self._options.runtime_env, self._cls.__name__)
            return client.create_actor(self, args, kwargs)
        options = self._options
        env = runtime_envs.effective(options.runtime_env)
        exported = self._exported
        if env is not None:
            exported = exported.in_env(runtime_envs.make_actor_in_env)
            args = env_arguments(client, env) + args
        exported.ensure_pickled()
        name = self._cls.__name__
        args_bytes, deps, contained, keep_alive = _serialize_arguments(
            client, f"{name}.__init__", args, kwargs)
        actor_id = client.ids.task_id()
        max_restarts = (1 << 30) if options.max_restarts == -1 else options.max_restarts
        spec = new_task_spec(actor_id, exported.function_id, name, args_bytes, deps, contained,
                             num_returns=0, resources=options.placement,
                             max_retries=max_restarts, retry_exceptions=False,
                             strategy=options.strategy, driver=submitting_driver())
        description = {
            "class_name": name, "methods": self._methods, "is_async": self._is_async,
            "max_concurrency": options.max_concurrency, "held": options.held,
            "max_task_retries": options.max_task_retries, "name": options.name,
            "namespace": namespace_for(options.namespace) if options.name else None,
            "detached": options.detached, "get_if_exists": options.get_if_exists,
        }
        handle = client.actor_caller().create(spec, exported.function_bytes, description)
        del keep_alive   # implicit puts: the agent pinned them on ACTOR_CREATE
        return handle

    def __repr__(self):
        return f"ActorClass({self._cls.__module__}.{self._cls.__qualname__})"


class ActorHandle:
    """A handle on a live actor: ``handle.method.remote(...)`` calls it.

    Picklable: pass it to tasks and other actors; calls through any copy work.
    """

    __slots__ = ("_lr_actor_id", "_lr_description", "_lr_ref", "__weakref__")

    def __init__(self, actor_id: bytes, description: dict, ref: ObjectRef):
        self._lr_actor_id = actor_id
        self._lr_description = description
        self._lr_ref = ref            # keeps the actor alive while this handle lives

    def __getattr__(self, name: str):
        # Not cached on the handle: a handle -> method -> handle cycle would
        # keep the actor alive until the garbage collector runs.
        if name.startswith("_lr_"):
            raise AttributeError(name)
        entry = self._lr_description["methods"].get(name)
        if entry is None:
            raise AttributeError(
                f"actor class {self._lr_description['class_name']} has no method {name!r}")
        return ActorMethod(self, name, entry[0])

    def __reduce__(self):
        return (_rebuild_handle, (self._lr_actor_id, self._lr_description, self._lr_ref))

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._lr_actor_id == self._lr_actor_id

    def __hash__(self):
        return hash(self._lr_actor_id)

    def __repr__(self):
        return f"ActorHandle({self._lr_description['class_name']}, {self._lr_actor_id.hex()})"

    def _actor_id_hex(self) -> str:
        return self._lr_actor_id.hex()


def _rebuild_handle(actor_id, description, ref):
    return ActorHandle(actor_id, description, ref)


class ActorMethod:
    """``handle.method``: call it with ``.remote(...)``."""

    __slots__ = ("_handle", "_name", "_num_returns")

    def __init__(self, handle: ActorHandle, name: str, num_returns: int):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns

    def __call__(self, *args, **kwargs):
        qualified = f"{self._handle._lr_description['class_name']}.{self._name}"
        raise TypeError(f"actor method {qualified} cannot be called directly; use "
                        f"handle.{self._name}.remote(...) to call it on the actor")

    def options(self, **options) -> "ActorMethod":
        check_option_names(options, METHOD_OPTIONS)
        num_returns = _check_num_returns(options.get("num_returns", self._num_returns))
        return ActorMethod(self._handle, self._name, num_returns)

    def remote(self, *args, **kwargs):
        handle = self._handle
        client = handle._lr_ref._client
        if client is None or client.closed:
            raise RuntimeNotRunningError(
                f"{handle!r} belongs to a lightray session that is not running")
        refs = client.actor_caller().call(handle, self._name, self._num_returns, args, kwargs)
        if self._num_returns == 1:
            return refs[0]
        if self._num_returns == 0:
            return None
        return refs
