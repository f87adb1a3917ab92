"""What a task (or the driver) can learn about where it runs."""
from __future__ import annotations


class _State:
    node_id = ""
    worker_id = ""
    task_id = None
    actor_id = None
    assigned = {}


state = _State()


class RuntimeContext:
    """Snapshot-free view: attributes read the live state of this process."""

    @property
    def node_id(self) -> str:
        return state.node_id

    @property
    def worker_id(self) -> str:
        return state.worker_id

    @property
    def task_id(self):
        """Hex id of the task running in this thread's worker, None in a driver."""
        return state.task_id.hex() if state.task_id else None

    @property
    def actor_id(self):
        """Hex id of the actor this process runs, None elsewhere."""
        return state.actor_id.hex() if state.actor_id else None

    def get_actor_id(self):
        return self.actor_id

    def get_node_id(self) -> str:
        return state.node_id

    def get_worker_id(self) -> str:
        return state.worker_id

    def get_task_id(self):
        return self.task_id

    def get_assigned_resources(self) -> dict:
        """Resources held by the running task, e.g. {"CPU": 1.0, "GPU": 1.0}."""
        return dict(state.assigned)

    def __repr__(self):
        return f"RuntimeContext(node_id={self.node_id!r}, worker_id={self.worker_id!r}, task_id={self.task_id!r})"


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext()
