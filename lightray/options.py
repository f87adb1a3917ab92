"""Validation of ``@remote(...)`` / ``.options(...)`` arguments."""
from __future__ import annotations

from . import runtime_env as runtime_envs
from .resources import make_request
from .scheduling import encode_strategy

TASK_OPTIONS = ("num_cpus", "num_gpus", "resources", "num_returns", "max_retries",
                "retry_exceptions", "name", "scheduling_strategy", "memory",
                "runtime_env")

DEFAULT_MAX_RETRIES = 3


def check_option_names(options: dict, valid=TASK_OPTIONS) -> None:
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))}; "
                         f"valid options are: {', '.join(valid)}")


def refuse_memory(options: dict) -> None:
    """memory= is Ray's scheduling hint by bytes; lightray does not place by
    memory, and an accepted option must work: refused unless None."""
    if options.get("memory") is not None:
        raise ValueError("memory= is not supported: lightray does not place tasks or actors "
                         "by memory. Leave it out, or give the agents a custom resource "
                         "(lightray-agent --resources '{\"memory_gb\": 64}') and ask for it "
                         "with resources={\"memory_gb\": 4}")


class TaskOptions:
    """Resolved options of a remote function; immutable once built."""

    __slots__ = ("request", "num_returns", "max_retries", "retry_exceptions", "name",
                 "strategy", "runtime_env")

    def __init__(self, options: dict):
        check_option_names(options)
        refuse_memory(options)
        self.runtime_env = runtime_envs.parse(options.get("runtime_env"))
        num_cpus = options.get("num_cpus", 1)
        self.request = make_request(num_cpus, options.get("num_gpus"), options.get("resources"))
        num_returns = options.get("num_returns", 1)
        if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns < 0:
            raise ValueError(f"num_returns must be a non-negative int, got {num_returns!r}")
        self.num_returns = num_returns
        max_retries = options.get("max_retries", DEFAULT_MAX_RETRIES)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < -1:
            raise ValueError(f"max_retries must be an int >= -1 (-1: retry forever), got {max_retries!r}")
        self.max_retries = (1 << 30) if max_retries == -1 else max_retries
        retry_exceptions = options.get("retry_exceptions", False)
        if not isinstance(retry_exceptions, bool):
            if not (isinstance(retry_exceptions, (list, tuple)) and all(
                    isinstance(t, type) and issubclass(t, BaseException) for t in retry_exceptions)):
                raise ValueError("retry_exceptions must be a bool or a list of exception types, "
                                 f"got {retry_exceptions!r}")
            retry_exceptions = tuple(retry_exceptions)
        self.retry_exceptions = retry_exceptions
        self.name = options.get("name")
        self.strategy = encode_strategy(options.get("scheduling_strategy"))
