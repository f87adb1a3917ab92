"""The task specification every task and actor call carries: its fields (TaskSpec).

``owner`` is the driver a direct task answers to (None through the agent);
``attempts_made`` counts earlier attempts (a direct task retried by the agent);
``strategy`` is where it may run (lightray.scheduling.encode_strategy);
``driver`` is the driver the task's printed output goes to, "node id/client id"
(lightray.output; None: nowhere, init(log_to_driver=False)), inherited by
the tasks it submits.
``args`` is None (no arguments) or the pickled ``(args, kwargs)`` where every
top-level ObjectRef was replaced by ``Dep(i)``: the agent resolves ``deps[i]``
and ships its payload with the task, so the worker never asks for it.

TaskSpec names the fields; a spec itself is a plain tuple in that order, built
with ``new_task_spec(...)`` by name and read by the index constants below.
Why not send the NamedTuple itself: pickle writes its class by module and
name into every frame and calls back into Python to rebuild it. Measured on
a frame holding one actor call (the common case on the direct paths): 127
bytes instead of 91, 5.4 us instead of 1.6 us to pickle and 4.3 us instead
of 1.5 us to unpickle. A plain tuple costs none of that, and an index is
cheaper to read than an attribute. ``TaskSpec._make(spec)`` gives the named
view where speed does not matter (tests, debugging).
"""
from __future__ import annotations

from typing import NamedTuple


class TaskSpec(NamedTuple):
    task_id: bytes
    function_id: bytes | None   # the function, or for an actor call the actor's id
    function_name: str
    args: bytes | None
    deps: list                  # object ids of the top-level ObjectRef arguments
    contained: list             # object ids of refs nested inside the arguments
    num_returns: int
    resources: dict | None
    max_retries: int
    retry_exceptions: object    # False, True, or a pickled tuple of exception types
    owner: str | None = None
    attempts_made: int = 0
    strategy: object = None
    driver: str | None = None


# The field positions, for the hot paths that index a spec.
TASK_ID, FUNCTION_ID, FUNCTION_NAME, ARGS, DEPS, CONTAINED, NUM_RETURNS, RESOURCES, \
    MAX_RETRIES, RETRY_EXCEPTIONS, OWNER, ATTEMPTS_MADE, STRATEGY, DRIVER = range(14)
assert TaskSpec._fields[DRIVER] == "driver" and len(TaskSpec._fields) == 14



def new_task_spec(task_id: bytes, function_id: bytes | None, function_name: str,
                  args: bytes | None, deps: list, contained: list, *, num_returns: int,
                  resources: dict | None, max_retries: int, retry_exceptions,
                  owner: str | None = None, attempts_made: int = 0,
                  strategy=None, driver: str | None = None) -> tuple:
    """A spec, its fields named by the caller (the fields of TaskSpec)."""
    return (task_id, function_id, function_name, args, deps, contained, num_returns,
            resources, max_retries, retry_exceptions, owner, attempts_made, strategy, driver)


def with_owner(spec: tuple, owner: str | None) -> tuple:
    """spec answering to owner (the direct path sets it per task)."""
    return spec[:OWNER] + (owner,) + spec[OWNER + 1:]


def for_retry_through_agent(spec: tuple) -> tuple:
    """spec handed back to the agent to run again: no owner, one more attempt."""
    return spec[:OWNER] + (None, spec[ATTEMPTS_MADE] + 1) + spec[STRATEGY:]


class Dep:
    """Placeholder for the i-th top-level ObjectRef argument of a task."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self):
        return (Dep, (self.index,))


def substitute(args: tuple, kwargs: dict, values: list):
    """Replace Dep placeholders at the top level of args/kwargs by values."""
    if any(type(a) is Dep for a in args):
        args = tuple(values[a.index] if type(a) is Dep else a for a in args)
    if kwargs and any(type(v) is Dep for v in kwargs.values()):
        kwargs = {k: (values[v.index] if type(v) is Dep else v) for k, v in kwargs.items()}
    return args, kwargs
