"""Local mode (``lightray.init(local_mode=True)``): the whole runtime in the driver's process.

No agent, no workers, no sockets, no shared memory: tasks run in threads of
the driver (or inline, with num_cpus=0), each actor in a thread of its own,
so breakpoints, profilers, coverage and tracebacks see them.

 client   LocalClient: what a CoreClient offers, answered in this process
 objects  the object table: values (pickled copies, or the objects), refcounts, waiting
 running  what tasks and actor calls share: arguments, results, errors, interrupts
 tasks    the resource pool, the queue and the pool threads that run tasks
 actors   each actor's thread (or event loop), its calls, kill and restart
 threads  which task or actor a thread runs (its runtime context)
 kv       the in-memory store behind lightray.kv
"""
