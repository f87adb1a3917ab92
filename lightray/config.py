"""Every configuration knob of lightray, in one place.

Each knob has a default and an environment variable that overrides it.
Values are read when a runtime starts (``lightray.init`` or an agent's start),
so a test or a user can change the environment between two sessions.
"""
from __future__ import annotations

import os
import tempfile

# Values whose serialized size reaches this many bytes live in shared memory;
# smaller ones travel inline inside messages.
INLINE_THRESHOLD_ENV = "LIGHTRAY_INLINE_THRESHOLD"
INLINE_THRESHOLD_DEFAULT = 100 * 1024

# Share of physical memory used as the object store's capacity when
# object_store_memory is not given (capped by the free space of /dev/shm).
OBJECT_STORE_MEMORY_ENV = "LIGHTRAY_OBJECT_STORE_MEMORY"
OBJECT_STORE_FRACTION = 0.3

# How many not-yet-started tasks of one resource shape an agent may queue on a
# busy worker when no resources are free for another one (pipelining hides the
# agent<->worker round trip; a worker that blocks in get hands them back).
PIPELINE_DEPTH_ENV = "LIGHTRAY_PIPELINE_DEPTH"
PIPELINE_DEPTH_DEFAULT = 16

# Whether a driver may lease a worker and send it tasks directly (see
# lightray.client.direct); "0" sends every task through the agent.
DIRECT_SUBMIT_ENV = "LIGHTRAY_DIRECT_SUBMIT"

# Task and actor state changes each agent keeps for lightray.state and the
# timeline (lightray.observe), oldest dropped first; 0 records none.
TASK_EVENTS_ENV = "LIGHTRAY_TASK_EVENTS"
TASK_EVENTS_DEFAULT = 100_000

# Hard cap on worker processes per agent (blocked workers and fractional CPU
# requests can need more workers than CPUs).
MAX_WORKERS_ENV = "LIGHTRAY_MAX_WORKERS"

# The level of the "lightray" loggers (lightray.log): a name (DEBUG, INFO,
# WARNING, ERROR, CRITICAL) or a number; default WARNING. init(logging_level=...)
# sets it for the driver and the agent it starts.
LOG_LEVEL_ENV = "LIGHTRAY_LOG_LEVEL"

# Seconds a worker waits for pip/uv to install a runtime environment's
# requirements (lightray.runtime_env) before the task fails.
RUNTIME_ENV_INSTALL_TIMEOUT_ENV = "LIGHTRAY_RUNTIME_ENV_INSTALL_TIMEOUT"
RUNTIME_ENV_INSTALL_TIMEOUT_DEFAULT = 600.0


def runtime_env_install_timeout() -> float:
    value = _env_number(RUNTIME_ENV_INSTALL_TIMEOUT_ENV, RUNTIME_ENV_INSTALL_TIMEOUT_DEFAULT, float)
    if value <= 0:
        raise ValueError(f"{RUNTIME_ENV_INSTALL_TIMEOUT_ENV} must be positive, got {value}")
    return value


# Where session directories (sockets, logs) are created: one directory per
# user (default /tmp/lightray-<uid>), mode 0700; lightray.agent.session
# refuses one that another user owns or may write into.
TEMP_DIR_ENV = "LIGHTRAY_TEMP_DIR"

# The largest frame a lightray ZeroMQ socket accepts (ZMQ_MAXMSGSIZE): a
# bigger one closes the sender's connection before the frame is held in
# memory. Legitimate frames are batches of ops whose values are each below
# the inline threshold; the largest single item is a function or class pickled
# by value (rarely above a few MB). The default leaves wide room above both.
MAX_MESSAGE_BYTES_ENV = "LIGHTRAY_MAX_MESSAGE_BYTES"
MAX_MESSAGE_BYTES_DEFAULT = 1 << 30

# Seconds init() waits for its agent to answer before giving up.
START_TIMEOUT_ENV = "LIGHTRAY_START_TIMEOUT"
START_TIMEOUT_DEFAULT = 30.0

# Prefix of every shared-memory segment name; the session id follows it.
# A test run sets its own (LIGHTRAY_SEGMENT_PREFIX), so that its leak checks
# never count another lightray's segments on the same machine.
SEGMENT_PREFIX_ENV = "LIGHTRAY_SEGMENT_PREFIX"
SEGMENT_PREFIX = "lr_"

# Where objects are spilled when the store passes its threshold (default: a
# "spill" folder inside the session directory), the threshold as a share of
# the capacity, and a switch: "0" never spills (a full store then refuses new
# objects with ObjectStoreFullError).
SPILL_DIR_ENV = "LIGHTRAY_SPILL_DIR"
SPILL_THRESHOLD_ENV = "LIGHTRAY_SPILL_THRESHOLD"
SPILL_THRESHOLD_DEFAULT = 0.8
SPILLING_ENV = "LIGHTRAY_SPILLING"

# Whether puts and task submissions record the caller's file:line for
# lightray.memory_summary() ("0" saves about a microsecond per call).
RECORD_CALL_SITES_ENV = "LIGHTRAY_RECORD_CALL_SITES"


# How long a lightray.kv call waits (timeout=None) for its answer: through
# leader elections, retrying, before KVTimeoutError.
KV_TIMEOUT_ENV = "LIGHTRAY_KV_TIMEOUT"
KV_TIMEOUT_DEFAULT = 30.0


def kv_timeout() -> float:
    value = _env_number(KV_TIMEOUT_ENV, KV_TIMEOUT_DEFAULT, float)
    if not value > 0:
        raise ValueError(f"{KV_TIMEOUT_ENV} must be > 0 seconds, got {value}")
    return value


def _env_number(name: str, default, cast=float):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a number") from None


def inline_threshold() -> int:
    return _env_number(INLINE_THRESHOLD_ENV, INLINE_THRESHOLD_DEFAULT, int)


def pipeline_depth() -> int:
    return max(1, _env_number(PIPELINE_DEPTH_ENV, PIPELINE_DEPTH_DEFAULT, int))


def task_events() -> int:
    return max(0, _env_number(TASK_EVENTS_ENV, TASK_EVENTS_DEFAULT, int))


def max_workers(num_cpus: float) -> int:
    return max(1, _env_number(MAX_WORKERS_ENV, max(32, int(num_cpus) * 8), int))


def direct_submit() -> bool:
    return os.environ.get(DIRECT_SUBMIT_ENV, "1") not in ("0", "false", "no")


def temp_dir() -> str:
    return (os.environ.get(TEMP_DIR_ENV)
            or os.path.join(tempfile.gettempdir(), f"lightray-{os.geteuid()}"))


def max_message_bytes() -> int:
    """The frame cap: LIGHTRAY_MAX_MESSAGE_BYTES, else 1 GiB (at least 16
    inline values, if the inline threshold was raised that far)."""
    default = max(MAX_MESSAGE_BYTES_DEFAULT, 16 * inline_threshold())
    value = _env_number(MAX_MESSAGE_BYTES_ENV, default, int)
    if value < 1 << 20:
        raise ValueError(f"{MAX_MESSAGE_BYTES_ENV} must be at least 1 MiB, got {value}")
    return value


def start_timeout() -> float:
    return _env_number(START_TIMEOUT_ENV, START_TIMEOUT_DEFAULT, float)


def segment_prefix() -> str:
    prefix = os.environ.get(SEGMENT_PREFIX_ENV) or SEGMENT_PREFIX
    if "/" in prefix or len(prefix) > 40:
        raise ValueError(f"{SEGMENT_PREFIX_ENV}={prefix!r}: a short name without '/'")
    return prefix


def spill_dir_from_env():
    return os.environ.get(SPILL_DIR_ENV) or None


def spill_threshold() -> float:
    value = _env_number(SPILL_THRESHOLD_ENV, SPILL_THRESHOLD_DEFAULT, float)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{SPILL_THRESHOLD_ENV} must be in (0, 1], got {value}")
    return value


def spilling_enabled() -> bool:
    return os.environ.get(SPILLING_ENV, "1") not in ("0", "false", "no")


def record_call_sites() -> bool:
    return os.environ.get(RECORD_CALL_SITES_ENV, "1") not in ("0", "false", "no")


def object_store_memory_from_env():
    value = _env_number(OBJECT_STORE_MEMORY_ENV, None, int)
    return value


# A node whose memory use is above this fraction of RAM (or whose store is
# over 90% full) gets no new unpinned tasks while another node fits.
HOT_NODE_THRESHOLD_ENV = "LIGHTRAY_HOT_NODE_THRESHOLD"
HOT_NODE_THRESHOLD_DEFAULT = 0.8

# Where init() (with no address) and init(address="auto") look first; a job's
# driver gets its node's agent here (lightray.jobs).
ADDRESS_ENV = "LIGHTRAY_ADDRESS"
# Set for a job's driver (lightray.jobs.supervisor): its id, and the job's
# runtime_env (JSON) that init() gives every task and actor it submits.
JOB_ID_ENV = "LIGHTRAY_JOB_ID"
JOB_RUNTIME_ENV_ENV = "LIGHTRAY_JOB_RUNTIME_ENV"
# Seconds a job's supervisor stays after its job ended (serving its log to
# followers) before it exits; its log's tail is in the control store then.
JOB_SUPERVISOR_LINGER_ENV = "LIGHTRAY_JOB_SUPERVISOR_LINGER"
JOB_SUPERVISOR_LINGER_DEFAULT = 60.0


def job_supervisor_linger() -> float:
    value = _env_number(JOB_SUPERVISOR_LINGER_ENV, JOB_SUPERVISOR_LINGER_DEFAULT, float)
    if not value >= 0:
        raise ValueError(f"{JOB_SUPERVISOR_LINGER_ENV} must be a number of seconds >= 0, "
                         f"got {value!r}")
    return value


def hot_node_threshold() -> float:
    value = _env_number(HOT_NODE_THRESHOLD_ENV, HOT_NODE_THRESHOLD_DEFAULT, float)
    if not 0 <= value <= 1:
        raise ValueError(f"{HOT_NODE_THRESHOLD_ENV} must be in [0, 1], got {value}")
    return value


# Objects pulled from another node come in chunks of this many bytes, this
# many in flight: a chunk small enough to stay in cache between the socket's
# copy and the write into the segment, enough of them to keep the link busy.
PULL_CHUNK_ENV = "LIGHTRAY_PULL_CHUNK_BYTES"
PULL_WINDOW_ENV = "LIGHTRAY_PULL_WINDOW"


def pull_chunk_bytes() -> int:
    return max(64 << 10, _env_number(PULL_CHUNK_ENV, 2 << 20, int))


def pull_window() -> int:
    return max(1, _env_number(PULL_WINDOW_ENV, 8, int))


# Seconds of silence after which an agent counts as dead (a SIGSTOPped,
# swapped or paused agent: its TCP connections stay up, so only silence
# shows it). Long enough that a stall of ~10 s survives; a node silent for
# SUSPECT_AFTER_S is shown "suspect" before that. A SIGKILLed agent is found
# much sooner: its peers' reconnects are refused (lightray.transport.peer_watch).
NODE_DEAD_AFTER_ENV = "LIGHTRAY_NODE_DEAD_AFTER_S"
NODE_DEAD_AFTER_DEFAULT = 30.0
NODE_DEAD_AFTER_RANGE = (1.0, 86400.0)


def node_dead_after() -> float:
    """LIGHTRAY_NODE_DEAD_AFTER_S, checked: ValueError naming the problem."""
    raw = os.environ.get(NODE_DEAD_AFTER_ENV, "")
    if raw == "":
        return NODE_DEAD_AFTER_DEFAULT
    low, high = NODE_DEAD_AFTER_RANGE
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ValueError(f"{NODE_DEAD_AFTER_ENV}={raw!r}: give the seconds of silence after "
                         f"which a node counts as dead, a number from {low:g} to {high:g}")
    return value


# Bytes of task specs an agent keeps to rebuild objects lost with a node
# (lightray.agent.lineage), oldest dropped first past it; 0 turns lineage off.
LINEAGE_BYTES_ENV = "LIGHTRAY_LINEAGE_BYTES"
LINEAGE_BYTES_DEFAULT = 1 << 30


def lineage_bytes() -> int:
    value = _env_number(LINEAGE_BYTES_ENV, LINEAGE_BYTES_DEFAULT, int)
    if value < 0:
        raise ValueError(f"{LINEAGE_BYTES_ENV} must be >= 0 (0: no lineage), got {value}")
    return value


# Memory (lightray.memory_limits, lightray.agent.memory_monitor, lightray.agent.segments).
# Seconds between sweeps of the store's directory for segments nobody holds
# or writes (a writer that died unnoticed); its death unlinks them at once.
SEGMENT_SWEEP_ENV = "LIGHTRAY_SEGMENT_SWEEP_S"
SEGMENT_SWEEP_DEFAULT = 10.0
# Share of the node's memory (the cgroup's limit where one is set, else RAM)
# above which the memory monitor kills the newest retriable task.
MEMORY_USAGE_THRESHOLD_ENV = "LIGHTRAY_MEMORY_USAGE_THRESHOLD"
MEMORY_USAGE_THRESHOLD_DEFAULT = 0.95
# A budget in bytes for the monitor instead of the node's memory: it then
# counts only the agent's own processes (itself and its workers) against it.
# Meant for tests and for sharing a machine; unset: the whole node.
MEMORY_LIMIT_BYTES_ENV = "LIGHTRAY_MEMORY_LIMIT_BYTES"
# Seconds between the monitor's samples; 0 turns the monitor off.
MEMORY_MONITOR_INTERVAL_ENV = "LIGHTRAY_MEMORY_MONITOR_INTERVAL_S"
MEMORY_MONITOR_INTERVAL_DEFAULT = 0.25


def segment_sweep_seconds() -> float:
    value = _env_number(SEGMENT_SWEEP_ENV, SEGMENT_SWEEP_DEFAULT, float)
    if not 0 < value < float("inf"):
        raise ValueError(f"{SEGMENT_SWEEP_ENV} must be a positive number of seconds, got {value}")
    return value


def memory_usage_threshold() -> float:
    value = _env_number(MEMORY_USAGE_THRESHOLD_ENV, MEMORY_USAGE_THRESHOLD_DEFAULT, float)
    if not 0 < value <= 1:
        raise ValueError(f"{MEMORY_USAGE_THRESHOLD_ENV} must be in (0, 1], got {value}")
    return value


def memory_limit_bytes() -> int | None:
    value = _env_number(MEMORY_LIMIT_BYTES_ENV, None, int)
    if value is not None and value <= 0:
        raise ValueError(f"{MEMORY_LIMIT_BYTES_ENV} must be a positive number of bytes, "
                         f"got {value}")
    return value


def memory_monitor_interval() -> float:
    value = _env_number(MEMORY_MONITOR_INTERVAL_ENV, MEMORY_MONITOR_INTERVAL_DEFAULT, float)
    if not 0 <= value < float("inf"):
        raise ValueError(f"{MEMORY_MONITOR_INTERVAL_ENV} must be >= 0 seconds, got {value}")
    return value


# init() with no local_mode argument runs in local mode (lightray.local) when
# this is "1" (or "true", "yes").
LOCAL_MODE_ENV = "LIGHTRAY_LOCAL_MODE"


def local_mode_from_env() -> bool:
    return os.environ.get(LOCAL_MODE_ENV, "0").lower() in ("1", "true", "yes")


# The most bytes one worker's log file (lightray.output.logfile: what its
# tasks print) holds before it is rotated; one rotated file is kept, so a
# worker's logs never take more than twice this on disk.
WORKER_LOG_BYTES_ENV = "LIGHTRAY_WORKER_LOG_BYTES"
WORKER_LOG_BYTES_DEFAULT = 10 * 1024 * 1024


def worker_log_bytes() -> int:
    return max(4096, _env_number(WORKER_LOG_BYTES_ENV, WORKER_LOG_BYTES_DEFAULT, int))
# The dashboard (lightray dashboard, init(include_dashboard=True)): the port it
# tries first (taken: any free one, unless a port was asked for), and how often
# it reads the state API (the page polls what it read last).
DASHBOARD_PORT_ENV = "LIGHTRAY_DASHBOARD_PORT"
DASHBOARD_PORT_DEFAULT = 8265
DASHBOARD_INTERVAL_ENV = "LIGHTRAY_DASHBOARD_INTERVAL"
DASHBOARD_INTERVAL_DEFAULT = 1.0


def dashboard_port() -> int:
    port = _env_number(DASHBOARD_PORT_ENV, DASHBOARD_PORT_DEFAULT, int)
    if not 0 <= port <= 65535:
        raise ValueError(f"{DASHBOARD_PORT_ENV} must be a port number (0-65535), got {port}")
    return port


def dashboard_interval() -> float:
    value = _env_number(DASHBOARD_INTERVAL_ENV, DASHBOARD_INTERVAL_DEFAULT)
    if not value > 0:
        raise ValueError(f"{DASHBOARD_INTERVAL_ENV} must be > 0 seconds, got {value}")
    return value
