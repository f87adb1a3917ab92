"""The task specification: a plain tuple, cheap to pickle, indexed by these names.

    (task_id, function_id, function_name, args, deps, contained, num_returns,
     resources, max_retries, retry_exceptions, owner, attempts_made, strategy)

``owner`` is the driver a direct task answers to (None through the agent);
``attempts_made`` counts earlier attempts (a direct task retried by the agent);
``strategy`` is where it may run (lightray.scheduling.encode_strategy).
``args`` is None (no arguments) or the pickled ``(args, kwargs)`` where every
top-level ObjectRef was replaced by ``Dep(i)``: the agent resolves ``deps[i]``
and ships its payload with the task, so the worker never asks for it.
"""
from __future__ import annotations

TASK_ID, FUNCTION_ID, FUNCTION_NAME, ARGS, DEPS, CONTAINED, NUM_RETURNS, RESOURCES, \
    MAX_RETRIES, RETRY_EXCEPTIONS, OWNER, ATTEMPTS_MADE, STRATEGY = range(13)


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
