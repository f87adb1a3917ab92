"""The node agent process (``lightray-agent``): sockets, worker processes, clean-up.

    drivers, workers ──DEALER──▶ ROUTER (ipc://<session>/agent.sock) ──▶ AgentState
                     ◀─────────── outbox flushed once per loop turn ◀──────┘
    fork()  ──▶ worker processes (children; die with the agent: PDEATHSIG + ppid check)

One thread. Each turn: read every message waiting (up to a batch), feed it to
AgentState, schedule, then execute the instructions it returns
(lightray.agent.instructions), in order: mesh connections and peer
messages, disk jobs, one frame per local destination, freed segments
unlinked (or kept warm for the next pull or restore: lightray.store.pool),
forks, kills; reap dead children. All bookkeeping is in lightray.agent.state;
this module only moves bytes and processes, and reads the state through a
few methods (turn, load_counters, warm_limit, driver_pids, ...).

An embedded agent (started by ``lightray.init()``) watches the driver that
started it and shuts down when it goes, so a SIGKILLed driver leaves nothing
behind: workers are killed, every segment of the session is unlinked, and the
session directory is removed.

The command line is in lightray.agent.cli; the session directory and the
records other processes read, in lightray.agent.session.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import time

import zmq

from .. import config, memory_limits
from ..log import get_logger
from ..scheduling import is_hot
from ..worker.entry import worker_main   # (imported here: forked workers start warm)
from . import instructions as i
from .intake import Intake
from .memory_monitor import MemoryMonitor
from .cluster import control_plane
from .control_link import RAFT_TICK, ControlLink
from .cluster.admission import check_ops
from .cluster.membership import HEAD, HEARTBEAT_INTERVAL
from .state import AgentState
from ..store.shm import shm_prefix
from ..ids import random_hex
from .session import forget_current_cluster, pid_alive, prepare_spill_dir, private_dir
from ..store import shm
from ..store.pool import WarmPool
from ..store.spill import RESTORE, SPILL, SpillIO
from ..store.transfer import ChunkReader, ChunkWriter
from ..transport import messages as m
from ..transport import sockets
from ..transport.guard import RefusalLog, describe_peer
from ..transport.mesh import Mesh

_log = get_logger("agent")

_BATCH = 512                # messages handled per turn before acting
_HOUSEKEEPING = 0.05        # seconds between reaping children / parent checks
_DRIVER_CHECK = 0.5         # seconds between checks that attached drivers still live
_MEMORY_RETRY_TICK = 0.25   # with the memory monitor off: how often killed tasks come back
DEFAULT_PORT = 6380         # the head's mesh port unless told otherwise
_CHUNK_BYTES_PER_TURN = 64 << 20   # pulled bytes written per turn at most
_JOIN_WARNING = 5.0         # seconds without the head's answer before saying so
_JOIN_NEXT_AFTER = 3.0      # seconds without an answer before asking the next --address
_PR_SET_PDEATHSIG = 1


class AgentServer:
    def __init__(self, *, session_dir: str, session: str, resources: dict, store_capacity: int,
                 parent_pid: int = 0, initial_workers: int | None = None,
                 namespace: str = "default", spill_dir: str | None = None,
                 cluster: dict | None = None, stream_key: bytes | None = None):
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
                                segment_prefix=self.segment_prefix,
                                task_events=config.task_events())
        self.context = zmq.Context(io_threads=1)
        self.router = sockets.private_router(self.context, self.address)
        self.intake = Intake(self.segment_prefix)
        self.segment_sweep = config.segment_sweep_seconds()   # (lightray.agent.segments)
        self.memory_monitor = MemoryMonitor(self.state)
        # SpillIO's thread says "done" on this socket; the loop polls it.
        self.spill_wake = self.context.socket(zmq.PULL)
        self.spill_wake.bind(f"inproc://spill-{session}")
        self.spill_io = SpillIO(self.context, f"inproc://spill-{session}")
        self.running = True
        self.mesh = None
        self.join_refused = None      # why the head refused our key in the handshake
        self.mesh_refusals = RefusalLog("lightray-agent")   # peers' messages dropped
        self.control = None           # ControlLink: this node's part in the control plane
        self.chunk_reader = ChunkReader()
        self.chunk_writer = ChunkWriter()
        self.warm_pool = WarmPool(self.segment_prefix)
        # What callers prove to workers' stream sockets (lightray.transport.stream),
        # in the WELCOME's node info: the cluster's (None: --insecure), or this
        # lone agent's own (stream_key: derived from the key in its session
        # directory; lightray.agent.cli).
        self.state.stream_key = (cluster.get("stream_key") if cluster is not None
                                 else stream_key or os.urandom(32))
        if cluster is not None:
            self._start_mesh(cluster)
        else:   # a lone control replica: lightray.kv works without a cluster too
            self.control = ControlLink(self.state, None, os.path.join(session_dir, "control"),
                                       self.mesh_refusals, 1)
            self.control.start_as_first_replica()
        self.control.send_to_client = self._send_to_client
        if initial_workers is None:
            initial_workers = max(1, int(num_cpus))
        self.state.initial_workers(initial_workers)

    def _start_mesh(self, cluster: dict) -> None:
        """Listen for peers; join through the members at cluster["head"] (a
        list of addresses, tried in turn) or be the head (None)."""
        self.mesh = Mesh(self.context, self.state.node_id, cluster["bind"], cluster["port"],
                         cluster.get("cluster_key"), cluster.get("advertise"),
                         key_path=cluster.get("key_path"))
        self.hot_threshold = config.hot_node_threshold()
        self.join_addresses = cluster["head"] or []
        self.head_address = self.join_addresses[0] if self.join_addresses else None
        self.started = self.join_tried = time.monotonic()
        self.join_warned = False
        self.control = ControlLink(
            self.state, self.mesh, os.path.join(self.session_dir, "control"),
            self.mesh_refusals,
            cluster.get("control_replicas") or control_plane.DEFAULT_REPLICAS)
        if cluster["head"] is None:
            self.control.start_as_first_replica()
        self.state.start_cluster(self.mesh.address, self.head_address, time.monotonic(),
                                 time.time(),
                                 dead_after=cluster.get("dead_after") or config.node_dead_after())

    def record(self) -> dict:
        """What lightray.agent.session.write_agent_record publishes about this agent."""
        return {"node_id": self.state.node_id, "ipc": self.address,
                "mesh_address": self.mesh.address if self.mesh is not None else None,
                "is_head": self.state.is_head, "segment_prefix": self.segment_prefix}

    # ------------------------------------------------------------ main loop

    def _choose_store(self, capacity: int) -> str:
        """Segment name prefix: /dev/shm, or a folder on disk when /dev/shm is
        smaller than the capacity asked for."""
        prefix = shm_prefix(self.session)
        free = shm.shm_free_bytes()
        if free and capacity <= free:
            return prefix
        directory = private_dir(os.path.join(self.session_dir, "objects"), "the object directory")
        _log.warning("/dev/shm has %d bytes free, less than the object store's capacity of "
                     "%d; objects are kept in files under %s (slower; give the container a "
                     "larger /dev/shm, e.g. docker --shm-size)", free, capacity, directory)
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
        next_raft_tick = 0.0
        next_sweep = time.monotonic() + self.segment_sweep
        next_memory_tick = 0.0
        memory_interval = self.memory_monitor.interval or _MEMORY_RETRY_TICK
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
            if self.control is not None and now >= next_raft_tick:
                next_raft_tick = now + RAFT_TICK
                self.control.tick()
                self._follow_leader()
            if now >= next_housekeeping:
                next_housekeeping = now + _HOUSEKEEPING
                self._reap_children()
                self.warm_pool.expire(now)
                if self.parent_pid and os.getppid() != self.parent_pid:
                    break   # the driver that embeds us is gone
                if now >= next_driver_check:
                    next_driver_check = now + _DRIVER_CHECK
                    self._drop_dead_drivers()
                if now >= next_memory_tick:
                    next_memory_tick = now + memory_interval
                    self.memory_monitor.tick(now)
                if now >= next_sweep:
                    next_sweep = now + self.segment_sweep
                    self._sweep_segments()
                if self.mesh is not None:
                    for node_id in self.mesh.gone_peers(now):
                        state.membership.peer_gone(node_id, time.time())
                    state.flush_pull_retries()
                    state.state_queries.tick(now)
                    self.control.send_unsent()
                    if now >= next_heartbeat:
                        next_heartbeat = now + HEARTBEAT_INTERVAL
                        state.cluster_tick(now, time.time(), self._load())
                        for who, why in state.membership.early.take_drops():
                            self._refuse_peer(who, why, None)
                        self.chunk_reader.drop_idle()
                        self.mesh.note_refused_handshakes()
                        self._warn_if_not_admitted(now)
            state.turn()
            if self.control is not None:
                self.control.end_of_turn()
            self._act()
        if state.evicted:
            _log.error("%s", state.evicted)
        self.stop()

    def _on_spill_io_done(self) -> None:
        while True:
            try:
                self.spill_wake.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        state = self.state
        state.on_io_stats(self.spill_io.busy_seconds)
        for kind, object_id, error in self.spill_io.completed():
            if kind == SPILL:
                state.on_spill_done(object_id, error)
            else:
                state.on_restore_done(object_id, error)
        state.schedule_if_needed()

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
            data = frames[1] if len(frames) > 1 else None
            try:
                ops = m.decode(frames[0].buffer)
                check_ops(ops, None if data is None else len(data))
            except m.BadMessage as error:
                answer = None
                if error.version is not None:
                    answer = (f"it speaks lightray protocol version {error.version}, this "
                              f"cluster version {m.PROTOCOL_VERSION} (run the same lightray "
                              "version on every node)")
                self._refuse_peer(sender, f"dropped a message from peer {sender}: {error}",
                                  answer, "malformed")
                continue
            try:
                if data is not None:
                    if state.accepts_chunk(ops[0], sender):
                        self.chunk_writer.write(ops[0][1], ops[0][2], data.buffer)
                        written += ops[0][3]
                    else:
                        ops = ops[1:]   # not for a pull from it under way: ignored
                ops = state.state_queries.take_peer_ops(
                    sender, self.control.take_kv_ops(sender, ops))
                refused = (state.handle_peer(sender, ops, now, wall, len(frames[0]))
                           if ops else None)
                for who, why in state.membership.early.take_drops():   # before an answer
                    self._refuse_peer(who, why, None)
                if refused is not None:
                    self._refuse_peer(sender, *refused)
                # A FORWARD with pushed arguments: their bytes are next in
                # this batch, so open their segments now.
                self._execute(state.take_pull_io())
            except Exception as error:   # a bug must not take the node down, nor flood the log
                self.mesh_refusals.note(("error", sender, type(error).__name__),
                                        f"error handling a message from peer {sender}: "
                                        f"{type(error).__name__}: {error}")

    def _follow_leader(self) -> None:
        """Tell the membership who leads the control plane (it decides
        membership; lightray.agent.cluster.membership)."""
        replica = self.control.replica
        membership = self.state.membership
        membership.set_leader(control_plane.known_leader(
            replica.leader if replica is not None else None, membership.control_roles()),
            time.time())

    def _refuse_peer(self, sender: str, why: str, answer, kind: str = "dropped") -> None:
        """Report a dropped message (once per peer and kind a minute); answer:
        the text of a JOIN_REFUSED to send back (with that first report only)."""
        if answer:
            kind = "refused"
        if self.mesh_refusals.note((kind, sender), why) and answer:
            try:
                self.mesh.router.send_multipart(
                    [sender.encode(), m.encode_refusal(answer)], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def _warn_if_not_admitted(self, now: float) -> None:
        """A joining agent the head has not answered after a while (once), or
        that the head refused: in the handshake (another cluster's key: stop
        with one line saying so, since retrying cannot help), or with a
        JOIN_REFUSED (the answer comes back on our connection to it)."""
        if not self.state.waiting_for_head():
            self.mesh.stop_watching_join()
            return
        why = self.mesh.join_refused()
        if why is not None:
            self.join_refused = why
            _log.error("this agent cannot join the cluster: %s", why)
            self.running = False
            return
        received = self.mesh.receive(peer=HEAD)
        if received is not None:
            try:
                self.state.handle_peer(HEAD, m.decode(received[1][0].buffer), now, time.time())
            except m.BadMessage as error:
                self.mesh_refusals.note(("peer", HEAD), f"the head answered: {error}")
        if len(self.join_addresses) > 1 and now - self.join_tried > _JOIN_NEXT_AFTER:
            self._join_through_next(now)
        if not self.join_warned and now - self.started > _JOIN_WARNING:
            self.join_warned = True
            _log.warning("no answer from the cluster at %s after %g s (is it running, "
                         "reachable, and using the same --cluster-key?); still trying",
                         ", ".join(self.join_addresses), _JOIN_WARNING)

    def _join_through_next(self, now: float) -> None:
        """No answer from the member asked: ask the next one of --address."""
        position = self.join_addresses.index(self.head_address)
        self.head_address = self.join_addresses[(position + 1) % len(self.join_addresses)]
        self.join_tried = now
        self.mesh.disconnect(HEAD)
        self.mesh.connect(HEAD, self.head_address, joining=True)
        self.state.membership.join_address = self.head_address
        self.mesh.send(HEAD, [self.state.membership.join_op()])

    def _load(self) -> dict:
        """This node's load, as its heartbeats report it."""
        import psutil   # here: only an agent in a cluster needs it, and it costs ~15 ms at start
        counters = self.state.load_counters()
        used, total = memory_limits.node_memory_usage()   # (its cgroup's, where it has a limit)
        fraction = used / total if total else 0.0
        return {"memory_fraction": fraction, "memory_used": used, "memory_total": total,
                "cpu_percent": psutil.cpu_percent(None),
                **counters, "control": self.control.role() if self.control else None,
                "hot": is_hot(fraction, self.hot_threshold, counters["store_used"],
                              counters["store_capacity"])}

    def _drop_dead_drivers(self) -> None:
        """A driver killed before it could say goodbye: let go of what it held
        (refs, actors it owns, leases), as if it had."""
        for client_id, pid in self.state.driver_pids():
            if pid and not pid_alive(pid):
                self.state.on_client_gone(client_id)

    def _sweep_segments(self) -> None:
        """Unlink the segments of this store that nobody holds or writes
        (lightray.agent.segments): their writer died without us noticing."""
        names = shm.list_segments(self.segment_prefix)
        for name in self.state.store.orphan_segments(names):
            self.chunk_reader.forget(name)
            shm.unlink(name)

    def _dispatch(self, identity: bytes, frame: bytes) -> None:
        ops = self.intake.read(identity, frame)   # checked shapes (lightray.agent.intake)
        if not ops:
            return
        try:
            if identity.endswith(b"r"):
                for op in ops:
                    if op[0] == m.HELLO:
                        self.state.on_hello(op[1], op[2], op[3], op[4])
            else:
                if self.control is not None and any(op[0] == m.KV for op in ops):
                    ops = self._kv_requests(identity[:-1], ops)
                self.state.handle(identity[:-1], ops)
        except Exception as error:
            # A bug must not take the whole node down; one line per kind and minute.
            self.intake.log.note(("error", type(error).__name__),
                                 f"error handling a message from {describe_peer(identity)}: "
                                 f"{type(error).__name__}: {error}")

    def _kv_requests(self, client_id: bytes, ops: list) -> list:
        """lightray.kv's requests go to the control link (a known client's only)."""
        client = self.state.clients.get(client_id)
        for op in ops:
            if op[0] == m.KV and client is not None:
                self.control.kv_from_client(client.identity, op[1], op[2])
        return [op for op in ops if op[0] != m.KV]

    def _send_to_client(self, identity: bytes, ops: list) -> None:
        self.router.send_multipart([identity, m.encode(ops)])

    def _act(self) -> None:
        self._execute(self.state.take_instructions())
        if self.warm_pool.bytes:
            self.warm_pool.trim(self.state.warm_limit())
        self.state.on_io_stats(None, self.warm_pool.bytes)

    def _execute(self, instructions: list) -> None:
        """Carry out the state's instructions, in order."""
        if not instructions:
            return
        mesh = self.mesh
        send = self.router.send_multipart
        now = time.monotonic()
        warm_limit = None
        for instruction in instructions:
            kind = type(instruction)
            if kind is i.Send:
                frame = m.encode(instruction.ops)
                send([instruction.identity, frame], copy=len(frame) < m.ZERO_COPY_MIN)
            elif kind is i.FreeSegment:
                if warm_limit is None:
                    warm_limit = self.state.warm_limit()
                self.chunk_reader.forget(instruction.name)
                self.warm_pool.release(instruction.name, warm_limit, now)
            elif kind is i.SpillJob:
                self.spill_io.submit(SPILL, *instruction, None)
            elif kind is i.RestoreJob:
                warm = self.warm_pool.take(instruction.layout[1], now)
                self.spill_io.submit(RESTORE, *instruction, warm)
            elif kind is i.Spawn:
                self.state.on_spawned(instruction.worker_id,
                                      self._fork_worker(instruction.worker_id, instruction.actor))
            elif kind is i.Kill:
                _kill(instruction.pid, getattr(signal, instruction.signal))
            elif kind is i.RemoveFiles:
                self.spill_io.remove(instruction.paths)
            elif mesh is None:
                continue   # not in a cluster: the state asks nothing of the mesh
            elif kind is i.SendPeer:
                mesh.send(instruction.node_id, instruction.ops)
            elif kind is i.SendChunk:
                node_id, op, name = instruction
                try:
                    data = self.chunk_reader.view(name, op[2], op[3])
                except OSError as error:
                    mesh.send(node_id, [(m.PULL_FAILED, op[1], f"cannot read it: {error}")])
                    continue
                mesh.send(node_id, [op], data)
            elif kind is i.OpenPull:
                warm = self.warm_pool.take(instruction.size, now)
                self.chunk_writer.open(instruction.object_id, instruction.segment,
                                       instruction.size, warm)
            elif kind is i.AbortPull:
                self.chunk_writer.abort(instruction.object_id)
            elif kind is i.MeshConnect:
                mesh.connect(instruction.node_id, instruction.address,
                             joining=instruction.node_id == HEAD)
            elif kind is i.MeshRename:
                mesh.rename(instruction.old, instruction.new)
            elif kind is i.MeshDisconnect:
                mesh.disconnect(instruction.node_id)
            elif kind is i.RaftMessages:
                if self.control is not None:
                    self.control.on_raft(instruction.messages)
            elif kind is i.ControlWrites and self.control is not None:
                self.control.writes(instruction.commands, False)
                self.control.writes(instruction.forwarded, True)

    # ------------------------------------------------------------- workers

    def _fork_worker(self, worker_id: str, actor: bool) -> int:
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
            memory_limits.prefer_for_oom_killer()   # a worker, never the agent
            worker_main(self.address, worker_id, agent_pid, actor=actor)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:
            _log.exception("worker %s failed", worker_id)
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
            self.state.on_worker_exit(
                pid, self.memory_monitor.on_worker_exit(pid, describe_exit(status)))
            self.memory_monitor.after_worker_exit(pid)

    # ------------------------------------------------------------- stopping

    def stop(self) -> None:
        self.running = False
        if self.control is not None:
            successor = self.control.hand_over()
            if successor is not None:
                _log.warning("handed the control leadership to %s", successor)
        if self.mesh is not None:
            # Tell the peers at once rather than let them wait for silence.
            self._execute(self.state.leaving())
        self.spill_io.stop()
        pids = self.state.worker_pids()
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


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by signal {name}"
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    return f"status {status}"


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

