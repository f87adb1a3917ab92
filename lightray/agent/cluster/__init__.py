"""lightray.agent.cluster: the agent's side of a cluster of agents (plain
parts of AgentState, each in a field; no I/O; lightray.transport.mesh carries
their messages).

    membership.py     ClusterMembership (state.membership): JOIN/JOIN_VIA/MEMBERS,
                      heartbeats, dead peers, rejoining, writes for the control store;
                      peer messages to their part
    early_ops.py      EarlyOps (membership.early): messages from a peer the authority has
                      not announced here yet, held (bounded) until it does, then handled
    node_table.py     NodeTable: when each peer was last heard, its incarnation, the
                      verdict (alive, suspect, dead) from silence
    node_rows.py      the rows of lightray.nodes() / `lightray status` from the membership
    forwarding.py     TaskForwarding (state.forwarding): tasks placed on a peer, their
                      results, objects pinned across nodes
    pulls.py          ObjectPulls (state.object_pulls): object bytes moving between nodes
    admission.py      what a peer may send: only JOIN from a node that has not joined,
                      the shape of every mesh op checked before a part touches it
    remote_actors.py  RemoteActors (state.remote_actors): actors created, run and called
                      across nodes
    control_plane.py  the control plane's rules, pure: which agent to add or remove as a
                      voter, where a control write goes, a node's control role

May import: lightray.agent.records, lightray.agent.instructions (the
LEAVING messages), lightray.agent.actors (one helper that builds an actor's
death payload), lightray.states, ids, scheduling,
serialization, task_spec, exceptions, config, transport.messages. Never
lightray.agent.state or server.
This __init__ imports nothing.
"""
