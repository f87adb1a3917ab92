"""Utilities built on tasks and actors, as in ``ray.util``.

    from lightray.util import ActorPool, Queue, Empty, Full

    pool = ActorPool([Worker.remote(), Worker.remote()])
    list(pool.map(lambda actor, v: actor.work.remote(v), values))   # in order

    jobs = Queue(maxsize=100)       # pass it to tasks and actors: one shared queue
    jobs.put(item); jobs.get(timeout=1.0)   # Empty / Full when it cannot
"""
from .actor_pool import ActorPool
from .queue import Empty, Full, Queue

__all__ = ["ActorPool", "Empty", "Full", "Queue"]
