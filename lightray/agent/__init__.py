"""lightray.agent: the node agent, one process per host (``lightray-agent``,
``python -m lightray.agent``).

    server.py         the I/O loop: the only module that touches sockets, processes, files
    control_link.py   ControlLink (server.control): this node's control replica and where
                      control writes go (the I/O of cluster/control_plane.py's rules)
    control_kv.py     KVRequests (control.kv): lightray.kv's requests, served or sent on
    state.py          AgentState: messages and ticks in, typed instructions out (no I/O);
                      composed of plain parts, one per module below, each in a field
    instructions.py   the instructions (Send, SendPeer, Spawn, Kill, FreeSegment, SpillJob, ...)
    effects.py        Effects: the buffers the parts write instructions to, drained in order
    records.py        entry classes: Task, ClientEntry, WorkerEntry, ObjectEntry, ActorEntry
    objects.py        ObjectDirectory (state.directory): the object table, refs, readiness
    store.py          StoreCapacity (state.store): reservations, spilling, restoring
    segments.py       half-written segments: unlinked when their writer dies, swept if orphaned
    memory_monitor.py MemoryMonitor (server.memory_monitor): kills the newest retriable task
                      when memory runs short; its choices (choose_victim, ...) are pure
    workers.py        WorkerPool (state.worker_pool): placing tasks on workers, worker deaths
    leases.py         LeaseBook (state.leases): workers lent to drivers, direct results
    actors.py         ActorBook (state.actor_book): actors' placement, own worker, restarts, names
    lineage.py        LineageBook (state.lineage): task specs kept to rebuild objects lost with
                      a node; a peer's tasks whose arguments were lost handed back
    cancels.py        CancelBook (state.cancels): cancelling tasks and what they submitted
    info.py           info_answer: the INFO requests an agent answers at once (nodes, memory, ...)
    intake.py         Intake: the shape checks of every driver/worker message before the state
                      sees it (bad ones dropped, reported once per kind a minute)
    cluster/          agents working together (membership, forwarding, pulls, remote actors)
    cli.py            the command line
    session.py        the session directory and the records other processes read
    __main__.py       ``python -m lightray.agent``

May import: lightray.states, ids, resources, scheduling, serialization,
task_spec, exceptions, config, memory_limits, transport, observe (events, queries), store (server.py,
control_link.py and control_kv.py only: shm, spill, pool, transfer, control) and lightray.worker (server.py: forked
workers). state.py and its parts import no socket, process or file module
(tests/test_agent_state_is_pure.py). Nothing here imports lightray.api or
lightray.client; this __init__ imports nothing.
"""
