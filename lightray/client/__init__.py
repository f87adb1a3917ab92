"""lightray.client: a process's side of the runtime (drivers and workers alike).

Modules:

* core: CoreClient, the thin glue composing the parts below; the API that
  lightray.api, ObjectRef, actors and workers call.
* connection: AgentConnection, the sockets to the agent and the I/O thread.
* ledger: RefLedger, pure reference counting (INC/DEC, escape, promise).
* objects: ObjectTable, ready values, futures and callbacks, mapped segments.
* direct: DirectSubmitter, tasks sent straight to leased workers.
* leases: LeaseBook, the pure decisions of direct submission (ask, use, give back).
* actor_caller: ActorCaller, actor calls sent straight to the actor's worker.
* channels: ActorChannel, the pure state of one caller's channel to an actor.
* kv_backend: KVBackend, lightray.kv's requests to the agent, retried with one token.
* actor_names: an actor's name claimed across the cluster (through the control leader).

May import: lightray.transport, lightray.store, lightray.worker.paths and the
user-facing floor (object_ref, actor, remote_function, serialization, ids,
config, exceptions, task_spec). Never lightray.api nor lightray.agent.
direct and actor_caller use only CoreClient's public members (lock,
send_locked, ledger, objects, reply sockets), never its private ones.
This file imports nothing.
"""
