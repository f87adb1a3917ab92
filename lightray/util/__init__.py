"""Utilities built on tasks and actors, as in ``ray.util``.

    from lightray.util import ActorPool, Queue, Empty, Full

    pool = ActorPool([Worker.remote(), Worker.remote()])
    list(pool.map(lambda actor, v: actor.work.remote(v), values))   # in order

    jobs = Queue(maxsize=100)       # pass it to tasks and actors: one shared queue
    jobs.put(item); jobs.get(timeout=1.0)   # Empty / Full when it cannot

    for ref in as_completed(refs): ...      # each ref once, as it finishes
    lightray.get(progress(refs))            # a progress bar (tqdm: lightray[progress])

Modules:

    actor_pool   ActorPool: calls spread over a fixed set of actors, one at a time each
    queue        Queue (with Empty, Full): a FIFO queue held by an async actor
    progress     as_completed(refs) and progress(refs): refs as they finish, a progress bar

May import: the public floor (lightray.api, actor, object_ref, exceptions), as
user code would. Nothing in lightray imports this package.
"""
from .actor_pool import ActorPool
from .progress import as_completed, progress
from .queue import Empty, Full, Queue

__all__ = ["ActorPool", "Empty", "Full", "Queue", "as_completed", "progress"]
