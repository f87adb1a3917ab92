"""lightray.worker: the processes the agent forks to run tasks and actors.

Modules:

* entry: worker_main, a forked worker's entry point (connects, picks a runner).
* tasks: TaskRunner, runs the tasks its agent (or a leasing driver) sends.
* actors: ActorRunner, a worker dedicated to one actor (sync, threaded, async).
* paths: where workers listen for callers bypassing the agent (imports nothing).

May import: lightray.client (a worker talks to its agent through a
CoreClient), lightray.transport, lightray.observe.events (its runs, for
lightray.state) and the user-facing floor (serialization,
task_spec, runtime, runtime_context, object_ref, exceptions). Never
lightray.agent nor lightray.api. Only lightray.client imports from here,
and only paths. This file imports nothing.
"""
