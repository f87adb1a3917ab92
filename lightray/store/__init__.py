"""The object store: shared-memory segments owned by the node agent.

    shm        POSIX shared-memory segments: create, write, attach read-only, unlink
    pool       warm segments: freed ones kept (renamed) for the next pull or restore
    spill      the spill I/O thread: copying segments to the spill directory and back
    transfer   the bytes of objects moving between nodes: chunks read and written
    control    the control store (lightray.store.control): the cluster's durable records

May import: lightray.config (and, inside this package, shm). No other lightray
package; the agent and the client sit above it. This __init__ imports nothing.
"""
