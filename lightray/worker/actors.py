"""A worker process dedicated to one actor.

    agent ──ACTOR_START──▶ build the instance (main thread) ──ACTOR_READY──▶ agent
    callers ──ACTOR_CALL──▶ stream socket <session>/<worker>.actor ──▶ run
            ◀─DIRECT_DONE── (same connection; lightray.transport.stream)

Three ways to run calls, chosen from the class and ``max_concurrency``:

* one at a time in the main thread, in arrival order (the default);
* a threaded actor (``max_concurrency`` > 1, no ``async def`` methods): a
  pool of that many threads;
* an async actor (any ``async def`` method): one event loop in its own
  thread runs up to ``max_concurrency`` calls at once (1,000 by default).

Only the main thread touches the sockets: pool threads and the event loop
hand finished calls back through a queue and a pipe the main thread polls
alongside them.

A call from another node holding refs (its caller's node id comes with it):

    ACTOR_CALL(spec, payloads, node) ──▶ ADOPT_FROM(node, refs) ──▶ agent, at once
    run the method (its GETs follow ADOPT_FROM on the same socket)
    wait for the agent's INFO_REPLY (node pins the objects for our agent) ──▶ DIRECT_DONE

Results for a caller on another node holding refs (its node id came with
its DIRECT_HELLO): while the result still holds them, HAND_OVER(node, refs)
──▶ agent (it keeps them for that node until asked); a sync; then
DIRECT_DONE names our node and the refs inside each result, whose agent
the caller has ask ours (lightray.agent.cluster.remote_actors).
"""
from __future__ import annotations

import concurrent.futures
import inspect
import os
import queue
import socket
import threading

import zmq

from .. import exceptions, serialization, task_warnings
from .. import task_spec as ts
from ..actor import ActorExit
from ..object_ref import ObjectRef
from ..observe.events import ACTOR_CREATION, ACTOR_TASK
from ..runtime_context import state as context_state
from ..serialization import ERROR, INLINE
from ..transport import messages as m
from .paths import actor_stream_path
from .tasks import TaskRunner, _DepError, check_spec


class ActorRunner(TaskRunner):
    # What a caller may send on the stream: kind -> (fewest, most) items.
    STREAM_OPS = {m.ACTOR_CALL: (3, 5), m.DIRECT_HELLO: (2, 3)}

    def __init__(self, client, node_info: dict):
        super().__init__(client, node_info)
        self._peers_by_owner: dict = {}    # caller client id -> stream.Peer
        # An actor worker never gets pipelined tasks to hand back; while any
        # of its calls waits in get/wait it lends its CPUs to the pool.
        client.on_block = self._on_actor_block
        client.on_unblock = self._on_actor_unblock
        client.on_steal = None
        self.instance = None
        self.actor_id = None
        self.failed = False
        self._mode = "sync"
        self._pool = None
        self._loop = None
        self._semaphore = None
        self._finished: queue.SimpleQueue = queue.SimpleQueue()
        self._finished_r, self._finished_w = os.pipe()
        self._wake_sent = False            # a byte is in the pipe, not yet drained
        self._async_batch: list = []       # calls for the event loop, handed over per frame
        os.set_blocking(self._finished_r, False)
        self._waiting_calls: list = []     # calls that came before the instance
        self._remote_callers: dict = {}    # caller id -> its node id (over TCP, other nodes)
        self._adopting: dict = {}          # task id -> (request id, Future, refs): ADOPT_FROM sent
        self._exit_why = None              # set by a method's exit_actor(): told the agent on reply

    def _on_actor_block(self) -> None:
        with self._lock:
            self._blocked_depth += 1
            if self._blocked_depth == 1:
                self.client.send([(m.BLOCKED, None, [])])

    def _on_actor_unblock(self) -> None:
        with self._lock:
            self._blocked_depth -= 1
            if self._blocked_depth == 0:
                self.client.send([(m.UNBLOCKED, None)])

    @staticmethod
    def stream_path(client) -> str:
        return actor_stream_path(client.address, client.worker_id)

    @staticmethod
    def stream_tcp_host(node_info: dict):
        # In a cluster, callers on other nodes connect over TCP.
        return node_info.get("mesh_host")

    def _on_exec(self, op) -> None:
        self.queue.put(op)
        self._wake_push.send(b"")

    # ------------------------------------------------------------ main loop

    def _register_extra(self, poller) -> None:
        poller.register(self._finished_r, zmq.POLLIN)

    def _on_extra_event(self, item) -> bool:
        if item == self._finished_r:
            self._send_finished()
            return True
        return False

    def _on_agent_op(self, op) -> None:
        if op[0] == m.ACTOR_START:
            self._start(op)

    def _serve_peer(self, peer) -> None:
        super()._serve_peer(peer)
        if self._async_batch:
            self._hand_batch_to_loop()
        if peer.sock.fileno() == -1 and self._peers_by_owner.get(peer.identity) is peer:
            del self._peers_by_owner[peer.identity]   # the caller left

    def _on_peer_op(self, peer, op) -> None:
        if op[0] == m.ACTOR_CALL:
            check_spec(op[1])
            if type(op[2]) is not list or len(op[2]) != len(op[1][ts.DEPS]):
                raise ValueError("the payloads of a call do not match its arguments")
            if len(op) > 3 and not self.failed:
                self._adopt_refs(op[1], op[3], op[4] if len(op) > 4 else ())
            if self.instance is None and not self.failed:
                self._waiting_calls.append(op)
            else:
                self._dispatch(op)
        elif op[0] == m.DIRECT_HELLO:
            if type(op[1]) is not bytes:
                raise ValueError("a caller's id must be bytes")
            peer.identity = op[1]
            self._peers_by_owner[op[1]] = peer
            if peer.sock.family == socket.AF_INET:
                # A caller on another node: it cannot map our segments, so
                # its results travel in the answer itself.
                self._remote_callers[op[1]] = op[2] if len(op) > 2 else None

    def _adopt_refs(self, spec, origin: str, more=()) -> None:
        """A call from node origin's side holds refs our agent may not know:
        have it ask origin about them now, before the method can read them
        (our reads follow on the same socket, so they find its entries).
        We hold them until the call is answered; ADOPT_FROM counts us (no
        INC) and has the agent tell us when each is ready. more: refs inside
        the values of ObjectRef arguments (the caller inlined those values)."""
        client = self.client
        contained = list(spec[ts.CONTAINED]) + [i for i in more if i not in spec[ts.CONTAINED]]
        keep = [ObjectRef(object_id, client, owned=True) for object_id in contained]
        request_id, future = client.start_request(
            lambda request_id: [(m.ADOPT_FROM, request_id, origin, contained)])
        self._adopting[spec[ts.TASK_ID]] = (request_id, future, keep)

    def _adopted(self, task_id: bytes) -> None:
        """Wait until origin pins the refs of a call for our agent: answered,
        the caller may drop its own refs at once (usually done already: a
        method that read them waited for that)."""
        request_id, future, _keep = self._adopting.pop(task_id)
        try:
            future.result(30.0)
        except (concurrent.futures.TimeoutError, exceptions.RuntimeNotRunningError):
            pass   # the agent is gone or stuck: answering is all that is left
        finally:
            self.client.end_request(request_id)

    # -------------------------------------------------------------- start

    def _start(self, op) -> None:
        _, spec, class_bytes, dep_payloads, assignment, description = op
        self.actor_id = spec[ts.TASK_ID]
        context_state.actor_id = self.actor_id
        context_state.assigned = assignment[0]
        if self.has_gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in assignment[1])
        if class_bytes is not None:
            self.function_bytes[spec[ts.FUNCTION_ID]] = class_bytes
        error_payload = None
        self.events.start(spec, ACTOR_CREATION)
        try:
            cls = self._function(spec)
            args, kwargs = self._arguments(spec, dep_payloads)
            self.instance = cls(*args, **kwargs)
        except ActorExit:
            error_payload = _died(f"the actor {spec[ts.FUNCTION_NAME]} could not be created: "
                                  f"its __init__ called lightray.actor.exit_actor()")
        except _DepError as dep_error:
            cause = serialization.deserialize(dep_error.payload[1])
            error_payload = _died(f"the actor {spec[ts.FUNCTION_NAME]} could not be created: an "
                                  f"argument of its constructor failed: {cause}", cause)
        except Exception as error:
            task_error = self._task_error(spec, error, f"{spec[ts.FUNCTION_NAME]}.__init__")
            error_payload = _died(f"the actor {spec[ts.FUNCTION_NAME]} could not be created: "
                                  f"its __init__ raised {type(error).__name__}: {error}\n"
                                  f"{task_error.traceback_str.rstrip()}", error)
        self.events.end(spec, [error_payload] if error_payload else ())
        if error_payload is None:
            self._set_mode(description)
        else:
            self.failed = True
        self.client.send([(m.ACTOR_READY, self.actor_id, error_payload,
                           self._server.tcp_address)])
        waiting, self._waiting_calls = self._waiting_calls, []
        for call in waiting:
            self._dispatch(call)
        if self._async_batch:
            self._hand_batch_to_loop()

    def _set_mode(self, description: dict) -> None:
        limit = description["max_concurrency"]
        if description["is_async"]:
            # Imported here, not at the top: the agent imports this module
            # before it forks its workers, and asyncio (with ssl) is about a
            # tenth of the agent's start-up; only async actors need it.
            import asyncio
            self._mode = "async"
            self._loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run_loop():
                asyncio.set_event_loop(self._loop)
                self._semaphore = asyncio.Semaphore(limit)
                ready.set()
                self._loop.run_forever()
            threading.Thread(target=run_loop, name="lightray-actor-loop", daemon=True).start()
            ready.wait()
        elif limit > 1:
            self._mode = "threaded"
            self._pool = concurrent.futures.ThreadPoolExecutor(
                limit, thread_name_prefix="lightray-actor")

    # -------------------------------------------------------------- calls

    def _dispatch(self, op) -> None:
        spec, dep_payloads = op[1], op[2]
        if self.failed:
            if self._adopting and spec[ts.TASK_ID] in self._adopting:
                self.client.end_request(self._adopting.pop(spec[ts.TASK_ID])[0])
            return   # the agent told every caller the actor is dead
        if self._mode == "sync":
            payloads, contained = self._run_call(spec, dep_payloads)
            self._reply(spec, payloads, contained)
        elif self._mode == "threaded":
            self._pool.submit(self._run_call_in_thread, spec, dep_payloads)
        else:
            self._async_batch.append((spec, dep_payloads))

    def _hand_batch_to_loop(self) -> None:
        """One wake-up of the event loop for all the calls of a frame."""
        batch, self._async_batch = self._async_batch, []
        self._loop.call_soon_threadsafe(self._start_batch, batch)

    def _start_batch(self, batch) -> None:
        """In the event loop: start each call as a task."""
        create_task = self._loop.create_task
        for spec, dep_payloads in batch:
            create_task(self._run_call_async(spec, dep_payloads))

    def _run_call(self, spec, dep_payloads):
        """(payloads, contained) of one call; a method's exception is its result."""
        self.events.start(spec, ACTOR_TASK)
        context_state.task_id = spec[ts.TASK_ID]
        try:
            method = getattr(self.instance, spec[ts.FUNCTION_NAME].rsplit(".", 1)[1])
            with task_warnings.capture() as warned:
                args, kwargs = self._arguments(spec, dep_payloads)
                result = method(*args, **kwargs)
            return self._store_results(spec, result, warned)
        except ActorExit:
            return self._exited(spec)
        except _DepError as dep_error:
            return self._failed(spec, dep_error.payload)
        except Exception as error:
            return self._failed(spec, (ERROR, serialization.dumps_exception(
                self._task_error(spec, error))))
        finally:
            context_state.task_id = None

    def _run_call_in_thread(self, spec, dep_payloads) -> None:
        self._finish(spec, self._run_call(spec, dep_payloads))

    async def _run_call_async(self, spec, dep_payloads) -> None:
        async with self._semaphore:
            self.events.start(spec, ACTOR_TASK)
            try:
                method = getattr(self.instance, spec[ts.FUNCTION_NAME].rsplit(".", 1)[1])
                with task_warnings.capture() as warned:   # per asyncio task
                    args, kwargs = self._arguments(spec, dep_payloads)
                    result = method(*args, **kwargs)
                    if inspect.iscoroutine(result):
                        result = await result
                outcome = self._store_results(spec, result, warned)
            except ActorExit:
                outcome = self._exited(spec)
            except _DepError as dep_error:
                outcome = self._failed(spec, dep_error.payload)
            except Exception as error:
                outcome = self._failed(spec, (ERROR, serialization.dumps_exception(
                    self._task_error(spec, error))))
        self._finish(spec, outcome)

    def _exited(self, spec):
        """A method called exit_actor(): its own caller gets ActorDiedError;
        the agent is told once the answer is out (_reply)."""
        self._exit_why = (f"its method {spec[ts.FUNCTION_NAME]}() called "
                          f"lightray.actor.exit_actor()")
        return self._failed(spec, _died(f"the actor {spec[ts.FUNCTION_NAME].rsplit('.', 1)[0]} "
                                        f"({self.actor_id.hex()}) exited: {self._exit_why}"))

    def _finish(self, spec, outcome) -> None:
        """From a pool thread or the event loop: the main thread replies.
        One byte in the pipe wakes it for everything queued meanwhile."""
        self._finished.put((spec, outcome))
        if not self._wake_sent:
            self._wake_sent = True
            os.write(self._finished_w, b"x")

    def _send_finished(self) -> None:
        try:
            while os.read(self._finished_r, 4096):
                pass
        except BlockingIOError:
            pass
        # Cleared after the pipe is empty and before the queue is read: a call
        # that finishes from now on writes a byte that stays for the next poll;
        # one that saw the flag still set is already in the queue.
        self._wake_sent = False
        answers: dict = {}   # peer -> DIRECT_DONE ops, one frame each
        while True:
            try:
                spec, (payloads, contained) = self._finished.get_nowait()
            except queue.Empty:
                break
            self._reply(spec, payloads, contained, answers)
        for peer, ops in answers.items():
            self._send_to_peer(peer, m.encode(ops))

    def _reply(self, spec, payloads, contained, answers=None) -> None:
        self.events.end(spec, payloads)
        if self._adopting and spec[ts.TASK_ID] in self._adopting:
            self._adopted(spec[ts.TASK_ID])
        handed_over = False
        if self._remote_callers and spec[ts.OWNER] in self._remote_callers:
            # Our agent has no use for a result owned on another node; refs
            # inside it were handed over in _store_results.
            registered = False
            handed_over = any(contained)
        else:
            registered = self._register_results(spec, payloads, contained)
        if registered or handed_over or spec[ts.CONTAINED]:
            # The answer overtakes anything sent to the agent: make sure the
            # agent counts the refs we now hold (INC) and our results (or
            # keeps their refs for the caller's node) before the caller,
            # answered, drops its refs, passes the results on or asks.
            self.client.sync_with_agent()
        peer = self._peers_by_owner.get(spec[ts.OWNER])
        if peer is not None:   # else the caller is gone
            op = (m.DIRECT_DONE, spec[ts.TASK_ID], payloads, registered, False)
            if handed_over:
                op += (self.node_id, contained)
            if answers is None:
                self._send_to_peer(peer, m.encode([op]))
            else:
                answers.setdefault(peer, []).append(op)
        if self._exit_why is not None and not self.failed:
            # Final: no restart; later calls here are dropped (their callers
            # hear of the death from the agent).
            self.failed = True
            self.client.send([(m.ACTOR_KILL, self.actor_id, True, self._exit_why)])

    def _store_results(self, spec, result, warned=None):
        if spec[ts.OWNER] not in self._remote_callers:
            return super()._store_results(spec, result, warned)
        num_returns = spec[ts.NUM_RETURNS]
        results = (result,) if num_returns == 1 else tuple(result)
        if len(results) != num_returns:
            raise ValueError(f"method {spec[ts.FUNCTION_NAME]}() declared num_returns="
                             f"{num_returns} but returned {len(results)} values")
        payloads, contained = [], []
        for value in results:
            serialized = serialization.serialize_inline(task_warnings.attach(value, warned))
            payloads.append((INLINE, serialized.inband))
            contained.append(serialized.contained)
        inner = list(dict.fromkeys(i for ids in contained for i in ids))
        if inner:
            # Now, while result holds the refs (our DECs for them can only
            # follow): our agent keeps them for the caller's node until it asks.
            self.client.send([(m.HAND_OVER, self._remote_callers[spec[ts.OWNER]], inner)],
                             escaping=inner)
        return payloads, contained

    @staticmethod
    def _failed(spec, payload):
        n = spec[ts.NUM_RETURNS]
        return [payload] * n, [[]] * n


def _died(message: str, cause=None):
    return (ERROR, serialization.dumps_exception(exceptions.ActorDiedError(message, cause)))
