"""Utilities built on tasks and actors, as in ``ray.util``.

    from lightray.util import ActorPool, Queue, Empty, Full

    pool = ActorPool([Worker.remote(), Worker.remote()])
    list(pool.map(lambda actor, v: actor.work.remote(v), values))   # in order

    jobs = Queue(maxsize=100)       # pass it to tasks and actors: one shared queue
    jobs.put(item); jobs.get(timeout=1.0)   # Empty / Full when it cannot

Modules:

    actor_pool   ActorPool: calls spread over a fixed set of actors, one at a time each
    queue        Queue (with Empty, Full): a FIFO queue held by an async actor

May import: the public floor (lightray.api, actor, object_ref, exceptions), as
user code would. Nothing in lightray imports this package.
"""
from .actor_pool import ActorPool
from .queue import Empty, Full, Queue

__all__ = ["ActorPool", "Empty", "Full", "Queue"]
