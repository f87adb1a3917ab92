"""What a task (or the driver) can learn about where it runs."""
from __future__ import annotations

import contextvars
import threading


class _State:
    node_id = ""
    worker_id = ""
    task_id = None
    actor_id = None
    assigned = {}
    output_driver = None   # a driver's own "node id/client id" (None: log_to_driver=False)
    dashboard_url = None   # set by init(include_dashboard=True) in the driver


state = _State()

# In a worker: (output prefix, driver) of the call this thread or asyncio
# task runs (lightray.output.capture); its prints go to that driver, and so
# does the output of every task it submits.
current_call: contextvars.ContextVar = contextvars.ContextVar("lightray_call", default=None)


def submitting_driver():
    """The driver that tasks submitted here belong to (the spec's driver field)."""
    call = current_call.get()
    return state.output_driver if call is None else call[1]

# Local mode runs tasks and actors in threads of the driver: each such thread
# has a state of its own here (lightray.local.threads); other threads see the
# process's.
_thread = threading.local()


def _view():
    return getattr(_thread, "state", None) or state


def thread_state():
    """This thread's own state (local mode), or None."""
    return getattr(_thread, "state", None)


def set_thread_state(thread_state):
    """Give this thread its own state (None: the process's); the previous one."""
    previous = getattr(_thread, "state", None)
    _thread.state = thread_state
    return previous


class RuntimeContext:
    """Snapshot-free view: attributes read the live state of this process."""

    @property
    def node_id(self) -> str:
        return _view().node_id

    @property
    def worker_id(self) -> str:
        return _view().worker_id

    @property
    def task_id(self):
        """Hex id of the task running in this thread's worker, None in a driver."""
        task_id = _view().task_id
        return task_id.hex() if task_id else None

    @property
    def actor_id(self):
        """Hex id of the actor this process runs, None elsewhere."""
        actor_id = _view().actor_id
        return actor_id.hex() if actor_id else None

    @property
    def dashboard_url(self):
        """The URL of the dashboard init(include_dashboard=True) serves from
        this process, else None."""
        return state.dashboard_url

    def get_actor_id(self):
        return self.actor_id

    def get_node_id(self) -> str:
        return self.node_id

    def get_worker_id(self) -> str:
        return self.worker_id

    def get_task_id(self):
        return self.task_id

    def get_assigned_resources(self) -> dict:
        """Resources held by the running task, e.g. {"CPU": 1.0, "GPU": 1.0}."""
        return dict(_view().assigned)

    def __repr__(self):
        return f"RuntimeContext(node_id={self.node_id!r}, worker_id={self.worker_id!r}, task_id={self.task_id!r})"


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext()
