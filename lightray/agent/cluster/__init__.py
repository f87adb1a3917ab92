"""lightray.agent.cluster: the agent's side of a cluster of agents (parts of
AgentState, no I/O; lightray.transport.mesh carries their messages).

    membership.py     JOIN/MEMBERS, heartbeats, dead peers, writes for the control store
    forwarding.py     tasks placed on a peer, their results, objects pinned across nodes
    pulls.py          object bytes moving between nodes in chunks
    remote_actors.py  actors created, run and called across nodes

May import: lightray.agent.records, lightray.agent.actors (one helper that
builds an actor's death payload), lightray.states, ids, scheduling,
serialization, task_spec, exceptions, config, transport.messages. Never
lightray.agent.state or server.
This __init__ imports nothing.
"""
