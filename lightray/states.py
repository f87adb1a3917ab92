"""Names of the states tasks and workers go through inside an agent.

Task:   WAITING (for arguments) -> QUEUED (for resources) -> DISPATCHED (on a
        worker's queue) or FORWARDED (to a peer agent) -> FINISHED.
Worker: STARTING (forked, no hello yet) -> IDLE <-> LEASED (running tasks or lent
        to a driver) <-> BLOCKED (its task waits in get) ... -> DEAD;
        or ACTOR (forked for one actor, runs nothing else) -> DEAD.
"""
WAITING, QUEUED, DISPATCHED, FINISHED = "waiting", "queued", "dispatched", "finished"
FORWARDED = "forwarded"     # sent to a peer agent (lightray.agent.cluster.membership)
STARTING, IDLE, LEASED, BLOCKED, DEAD = "starting", "idle", "leased", "blocked", "dead"
ACTOR = "actor"
