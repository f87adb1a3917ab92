"""The node agent process (``lightray-agent``): sockets, worker processes, clean-up.

    drivers, workers ──DEALER──▶ ROUTER (ipc://<session>/agent.sock) ──▶ AgentState
                     ◀─────────── outbox flushed once per loop turn ◀──────┘
    fork()  ──▶ worker processes (children; die with the agent: PDEATHSIG + ppid check)

One thread. Each turn: read every message waiting (up to a batch), feed it to
AgentState, schedule, then act on the instructions: send the outbox (one
frame per destination), fork, kill, unlink freed segments (or keep them
warm for the next pull or restore: lightray.store.pool); reap dead
children. All bookkeeping is in lightray.agent.state; this module only moves
bytes and processes.

An embedded agent (started by ``lightray.init()``) watches the driver that
started it and shuts down when it goes, so a SIGKILLed driver leaves nothing
behind: workers are killed, every segment of the session is unlinked, and the
session directory is removed.

The command line is in lightray.agent.cli; the session directory and the
records other processes read, in lightray.agent.session.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import sys
import time

import zmq

from .. import config
from ..worker import tasks as _worker_preloaded  # noqa: F401  (forked workers start warm)
from .cluster.membership import HEAD, HEARTBEAT_INTERVAL
from .state import AgentState, describe_exit
from ..store.shm import shm_prefix
from ..ids import random_hex
from .session import forget_current_cluster, pid_alive, prepare_spill_dir
from ..store import shm
from ..store.pool import WarmPool
from ..store.spill import RESTORE, SPILL, SpillIO
from ..store.transfer import ChunkReader, ChunkWriter
from ..transport import messages as m
from ..transport import sockets
from ..transport.mesh import Mesh

_BATCH = 512                # messages handled per turn before acting
_HOUSEKEEPING = 0.05        # seconds between reaping children / parent checks
_DRIVER_CHECK = 0.5         # seconds between checks that attached drivers still live
DEFAULT_PORT = 6380         # the head's mesh port unless told otherwise
_CHUNK_BYTES_PER_TURN = 64 << 20   # pulled bytes written per turn at most
_JOIN_WARNING = 5.0         # seconds without the head's answer before saying so
_PR_SET_PDEATHSIG = 1


class AgentServer:
    def __init__(self, *, session_dir: str, session: str, resources: dict, store_capacity: int,
                 parent_pid: int = 0, initial_workers: int | None = None,
                 namespace: str = "default", spill_dir: str | None = None,
                 cluster: dict | None = None):
        self.session_dir = session_dir
        self.session = session
        self.parent_pid = parent_pid
        self.address = sockets.ipc_address(session_dir)
        num_cpus = resources.get("CPU", 0)
        self.segment_prefix = self._choose_store(store_capacity)
        self.spill_dir = prepare_spill_dir(session_dir, session, spill_dir)
        self.state = AgentState(node_id=random_hex(8), session=session, resources=resources,
                                pipeline_depth=config.pipeline_depth(),
                                max_workers=config.max_workers(num_cpus),
                                store_capacity=store_capacity, namespace=namespace,
                                spill_dir=self.spill_dir,
                                spill_threshold=config.spill_threshold(),
                                spilling=config.spilling_enabled(),
                                segment_prefix=self.segment_prefix)
        self.context = zmq.Context(io_threads=1)
        self.router = sockets.router(self.context, self.address)
        # SpillIO's thread says "done" on this socket; the loop polls it.
        self.spill_wake = self.context.socket(zmq.PULL)
        self.spill_wake.bind(f"inproc://spill-{session}")
        self.spill_io = SpillIO(self.context, f"inproc://spill-{session}")
        self.running = True
        self.mesh = None
        self.control = None
        self.chunk_reader = ChunkReader()
        self.chunk_writer = ChunkWriter()
        self.warm_pool = WarmPool(self.segment_prefix)
        if cluster is not None:
            self._start_mesh(cluster)
        if initial_workers is None:
            initial_workers = max(1, int(num_cpus))
        self.state.initial_workers(initial_workers)

    def _start_mesh(self, cluster: dict) -> None:
        """Listen for peers; join the head at cluster["head"] or be the head."""
        self.mesh = Mesh(self.context, self.state.node_id, cluster["bind"], cluster["port"],
                         cluster.get("cluster_key"), cluster.get("advertise"))
        self.hot_threshold = config.hot_node_threshold()
        self.head_address = cluster["head"]
        self.started = time.monotonic()
        self.join_warned = False
        if cluster["head"] is None:
            from ..store.control import ControlStore
            self.control = ControlStore(os.path.join(self.session_dir, "control.db"))
        self.state.start_cluster(self.mesh.address, cluster["head"], time.monotonic(),
                                 time.time())

    # ------------------------------------------------------------ main loop

    def _choose_store(self, capacity: int) -> str:
        """Segment name prefix: /dev/shm, or a folder on disk when /dev/shm is
        smaller than the capacity asked for."""
        prefix = shm_prefix(self.session)
        free = shm.shm_free_bytes()
        if free and capacity <= free:
            return prefix
        directory = os.path.join(self.session_dir, "objects")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        print(f"lightray-agent: warning: /dev/shm has {free} bytes free, less than the object "
              f"store's capacity of {capacity}; objects are kept in files under {directory} "
              "(slower; give the container a larger /dev/shm, e.g. docker --shm-size)",
              file=sys.stderr, flush=True)
        return os.path.join(directory, prefix)

    def serve(self) -> None:
        router = self.router
        state = self.state
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(self.spill_wake, zmq.POLLIN)
        mesh_socket = self.mesh.router if self.mesh is not None else None
        if mesh_socket is not None:
            poller.register(mesh_socket, zmq.POLLIN)
        next_housekeeping = 0.0
        next_driver_check = 0.0
        next_heartbeat = 0.0
        self._act()
        while self.running and not state.stopping:
            events = dict(poller.poll(int(_HOUSEKEEPING * 1000)))
            if self.spill_wake in events:
                self._on_spill_io_done()
            if router in events:
                for _ in range(_BATCH):
                    try:
                        identity, frame = router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    except ValueError:
                        continue  # malformed multipart: ignore
                    self._dispatch(identity, frame)
            if mesh_socket is not None and mesh_socket in events:
                self._on_mesh()
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + _HOUSEKEEPING
                self._reap_children()
                self.warm_pool.expire(now)
                if self.parent_pid and os.getppid() != self.parent_pid:
                    break   # the driver that embeds us is gone
                if now >= next_driver_check:
                    next_driver_check = now + _DRIVER_CHECK
                    self._drop_dead_drivers()
                if self.mesh is not None:
                    state.flush_pull_retries()
                    if now >= next_heartbeat:
                        next_heartbeat = now + HEARTBEAT_INTERVAL
                        state.cluster_tick(now, time.time(), self._load())
                        self.chunk_reader.drop_idle()
                        self._warn_if_not_admitted(now)
            if state.needs_schedule:
                state.schedule()
            if state.needs_store_work:
                state.store_work()
            self._act()
        if getattr(state, "evicted", None):
            print(f"lightray-agent: {state.evicted}", file=sys.stderr, flush=True)
        self.stop()

    def _on_spill_io_done(self) -> None:
        while True:
            try:
                self.spill_wake.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        state = self.state
        state.copy_seconds = self.spill_io.busy_seconds
        for kind, object_id, error in self.spill_io.completed():
            if kind == SPILL:
                state.on_spill_done(object_id, error)
            else:
                state.on_restore_done(object_id, error)
        if state.needs_schedule:
            state.schedule()

    def _on_mesh(self) -> None:
        state = self.state
        now, wall = time.monotonic(), time.time()
        written = 0
        for _ in range(_BATCH):
            if written >= _CHUNK_BYTES_PER_TURN:
                break   # the rest next turn: heartbeats and local work must not wait
            received = self.mesh.receive()
            if received is None:
                break
            sender, frames = received
            try:
                ops = m.decode(frames[0].buffer)
                if len(frames) > 1 and ops and ops[0][0] == m.PULL_DATA:
                    if state.accepts_chunk(ops[0]):
                        self.chunk_writer.write(ops[0][1], ops[0][2], frames[1].buffer)
                        written += ops[0][3]
                state.handle_peer(sender, ops, now, wall)
                if state.pull_io:
                    # A FORWARD with pushed arguments: their bytes are next in
                    # this batch, so open their segments now.
                    self._do_pull_io()
            except Exception:
                import traceback
                print(f"lightray-agent: error handling a message from peer {sender}:",
                      file=sys.stderr)
                traceback.print_exc()

    def _warn_if_not_admitted(self, now: float) -> None:
        """Once: a joining agent the head has not answered after a while."""
        state = self.state
        if (not state.is_head and state.head_id is None and not self.join_warned
                and now - self.started > _JOIN_WARNING):
            self.join_warned = True
            print(f"lightray-agent: no answer from the head at {self.head_address} after "
                  f"{_JOIN_WARNING:g} s (is it running, reachable, and using the same "
                  "--cluster-key?); still trying", file=sys.stderr, flush=True)

    def _load(self) -> dict:
        """This node's load, as its heartbeats report it."""
        import psutil
        from ..scheduling import is_hot
        state = self.state
        memory = psutil.virtual_memory()
        fraction = (memory.total - memory.available) / memory.total
        return {"memory_fraction": fraction, "cpu_percent": psutil.cpu_percent(None),
                "store_used": state.store_used, "store_capacity": state.store_capacity,
                "spilled": state.spilled_now, "pulled": state.pulled_total,
                "served": state.served_total, "warm": state.warm_bytes,
                "hot": is_hot(fraction, self.hot_threshold, state.store_used,
                              state.store_capacity)}

    def _drop_dead_drivers(self) -> None:
        """A driver killed before it could say goodbye: let go of what it held
        (refs, actors it owns, leases), as if it had."""
        for client in list(self.state.clients.values()):
            if client.kind == "driver" and client.pid and not pid_alive(client.pid):
                self.state.on_client_gone(client.client_id)

    def _dispatch(self, identity: bytes, frame: bytes) -> None:
        try:
            ops = m.decode(frame)
        except Exception:
            return  # not ours to unpickle further; drop it
        try:
            if identity.endswith(b"r"):
                for op in ops:
                    if op[0] == m.HELLO:
                        self.state.on_hello(op[1], op[2], op[3], op[4])
            else:
                self.state.handle(identity[:-1], ops)
        except Exception:
            # A bug or a malformed message must not take the whole node down.
            import traceback
            print(f"lightray-agent: error handling a message from {identity!r}:",
                  file=sys.stderr)
            traceback.print_exc()

    def _act(self) -> None:
        state = self.state
        if self.mesh is not None:
            self._act_on_mesh()
        if state.io_jobs:
            jobs, state.io_jobs = state.io_jobs, []
            now = time.monotonic()
            for job in jobs:
                warm = self.warm_pool.take(job[2][1], now) if job[0] == RESTORE else None
                self.spill_io.submit(*job, warm)
        if state.outbox:
            send = self.router.send_multipart
            for identity, ops in state.outbox.items():
                frame = m.encode(ops)
                send([identity, frame], copy=len(frame) < m.ZERO_COPY_MIN)
            state.outbox.clear()
        if state.free_segments:
            # After the answers: giving back a large segment takes milliseconds,
            # which the writers and the spill thread spend working meanwhile.
            free, state.free_segments = state.free_segments, []
            now, limit = time.monotonic(), self._warm_limit()
            for name in free:
                self.chunk_reader.forget(name)
                self.warm_pool.release(name, limit, now)
        if self.warm_pool.bytes:
            self.warm_pool.trim(self._warm_limit())
        state.warm_bytes = self.warm_pool.bytes
        if state.spawn:
            spawn, state.spawn = state.spawn, []
            for worker_id in spawn:
                state.set_worker_pid(worker_id, self._fork_worker(worker_id))
        if state.kill:
            kill, state.kill = state.kill, []
            for pid in kill:
                _kill(pid, signal.SIGKILL)
        if state.free_files:
            files, state.free_files = state.free_files, []
            self.spill_io.remove(files)

    def _warm_limit(self) -> int:
        """Warm segments count against the capacity: what objects and
        reservations leave of it."""
        state = self.state
        return state.store_capacity - state.store_used - state.reserved

    def _do_pull_io(self) -> None:
        jobs, self.state.pull_io = self.state.pull_io, []
        now = time.monotonic()
        for job in jobs:
            if job[0] == "open":
                warm = self.warm_pool.take(job[3], now)
                self.chunk_writer.open(job[1], job[2], job[3], warm)
            else:
                self.chunk_writer.abort(job[1])

    def _act_on_mesh(self) -> None:
        state, mesh = self.state, self.mesh
        if state.mesh_connect:
            connect, state.mesh_connect = state.mesh_connect, []
            for node_id, address in connect:
                mesh.connect(node_id, address)
        if state.mesh_rename:
            renames, state.mesh_rename = state.mesh_rename, []
            for old, new in renames:
                mesh.rename(old, new)
        if state.pull_io:
            self._do_pull_io()
        if state.peer_outbox:
            for node_id, ops in state.peer_outbox.items():
                mesh.send(node_id, ops)
            state.peer_outbox.clear()
        if state.peer_data:
            chunks, state.peer_data = state.peer_data, []
            for node_id, op, name in chunks:
                try:
                    data = self.chunk_reader.view(name, op[2], op[3])
                except OSError as error:
                    mesh.send(node_id, [(m.PULL_FAILED, op[1], f"cannot read it: {error}")])
                    continue
                mesh.send(node_id, [op], data)
        if state.mesh_disconnect:
            gone, state.mesh_disconnect = state.mesh_disconnect, []
            for node_id in gone:
                mesh.disconnect(node_id)
        if state.control_writes and self.control is not None:
            writes, state.control_writes = state.control_writes, []
            self._apply_control(writes)
        elif state.control_writes:
            state.control_writes = []

    def _apply_control(self, writes: list) -> None:
        """Apply a turn's writes to the control store in one transaction;
        a malformed one is reported and dropped, never fatal."""
        from ..store.control import validate
        wall = time.time()
        commands = []
        for write in writes:
            command = _control_command(write, wall)
            try:
                commands.append(validate(command))
            except (TypeError, ValueError) as error:
                print(f"lightray-agent: control store: dropped {command[0]!r}: {error}",
                      file=sys.stderr)
        if commands:
            try:
                self.control.apply_batch(commands)
            except Exception as error:   # a full disk, say: the cluster runs on without it
                print(f"lightray-agent: control store: {len(commands)} write(s) lost: "
                      f"{type(error).__name__}: {error}", file=sys.stderr)

    # ------------------------------------------------------------- workers

    def _fork_worker(self, worker_id: str) -> int:
        agent_pid = os.getpid()
        pid = os.fork()
        if pid:
            return pid
        # Child: never return into the agent's stack; always leave via _exit.
        code = 0
        try:
            _set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != agent_pid:
                os._exit(1)
            from ..worker.tasks import worker_main
            worker_main(self.address, worker_id, agent_pid,
                        actor=self.state.workers[worker_id].actor is not None)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)

    def _reap_children(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.state.on_worker_exit(pid, describe_exit(status))

    # ------------------------------------------------------------- stopping

    def stop(self) -> None:
        self.running = False
        if self.mesh is not None:
            # Tell the peers at once rather than let them wait for silence.
            for node_id, view in self.state.peers.items():
                if view.alive:
                    self.mesh.send(node_id, [(m.LEAVING,)])
            if self.state.head_id is None:   # not admitted yet: the head knows us already
                self.mesh.send(HEAD, [(m.LEAVING,)])
        self.spill_io.stop()
        pids = [w.pid for w in self.state.workers.values() if w.pid]
        for pid in pids:
            _kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        for pid in pids:
            while time.monotonic() < deadline:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    break
                time.sleep(0.005)
        for name in self.state.all_segments():
            shm.unlink(name)
        self.warm_pool.clear()
        # Segments written by a process that died before it could report them.
        shm.unlink_all(self.segment_prefix)
        self.chunk_writer.abort_all()
        if self.control is not None:
            self.control.close()
        try:
            if self.mesh is not None:
                self.mesh.close(linger_ms=500)
            self.router.close(linger=0)
            self.spill_wake.close(linger=0)
            self.context.term()
        except zmq.ZMQError:
            pass
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
        shutil.rmtree(self.session_dir, ignore_errors=True)
        if self.state.is_head:
            forget_current_cluster(self.mesh.address)


def _control_command(write: tuple, wall: float) -> tuple:
    """A control-store command from the state's write: dicts become JSON
    text, and a timestamp left None becomes now."""
    command = tuple(json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for v in write)
    if command[-1] is None:
        command = command[:-1] + (wall,)
    return command


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _set_parent_death_signal(sig: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the ppid check still applies
        pass

