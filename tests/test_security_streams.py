"""The stream sockets of workers under attack (lightray.transport.stream).

A leased worker's ``<worker>.lease``, an actor's ``<worker>.actor`` and, in a
cluster, an actor's TCP listener: a peer that cannot prove the stream key
gets nothing unpickled and is dropped; a peer of another uid cannot connect
to the Unix sockets; garbage after a valid handshake drops only that
connection; the worker keeps serving its other callers throughout. Between
hosts every TCP frame is encrypted, then sealed: the cipher's own tests, and
an actor called across nodes with the cipher forced on loopback (the real
thing, two hosts, is tests/test_security_netns.py).

The attackers here are raw sockets of the test process, speaking the
handshake by hand (or not at all).
"""
import hashlib
import hmac
import os
import pickle
import pwd
import select
import socket
import struct
import subprocess
import sys
import threading
import time

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lightray
from lightray import NodeAffinity, api, serialization
from lightray.runtime import current_client_or_none
from lightray.transport import messages as m
from lightray.transport import stream, stream_cipher, stream_proof
from lightray.worker.paths import actor_stream_path, lease_stream_path

HEADER = struct.Struct("<I")
CHALLENGE = 37      # "LRST", version, the listener's nonce
CONFIRM = 32


# ------------------------------------------------------------------ helpers

class CreatesMarker:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def framed(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def hostile_frame(marker: str) -> bytes:
    return framed(pickle.dumps([(m.EXEC, CreatesMarker(marker)),
                                (m.ACTOR_CALL, CreatesMarker(marker), [])]))


def dial(address: str, timeout: float = 10.0) -> socket.socket:
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://"):].rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return data


def mac(key: bytes, role: bytes, listener_nonce: bytes, caller_nonce: bytes) -> bytes:
    return hmac.new(key, stream_proof.LABEL + role + listener_nonce + caller_nonce,
                    hashlib.sha256).digest()


def prove(sock: socket.socket, key: bytes, nonces: list | None = None) -> bool:
    """Answer the listener's challenge with key; True if it confirmed with its
    own proof. nonces, if given, gets (the listener's, ours)."""
    challenge = recv_exactly(sock, CHALLENGE)
    assert challenge[:5] == b"LRST" + bytes((stream.PROTOCOL_VERSION,)), challenge
    caller_nonce = os.urandom(32)
    sock.sendall(bytes((stream.PROTOCOL_VERSION,)) + caller_nonce
                 + mac(key, b"caller", challenge[5:], caller_nonce))
    confirm = recv_exactly(sock, CONFIRM)
    if nonces is not None:
        nonces += [challenge[5:], caller_nonce]
    return len(confirm) == CONFIRM and hmac.compare_digest(
        confirm, mac(key, b"listener", challenge[5:], caller_nonce))


def seal(key: bytes, sequence: int, payload: bytes) -> bytes:
    """The seal of a small frame on a TCP stream: keyed BLAKE2b of sequence + payload."""
    return hashlib.blake2b(sequence.to_bytes(8, "little") + payload, key=key,
                           digest_size=32).digest()


def sealed(key: bytes, sequence: int, payload: bytes) -> bytes:
    """A small frame as it travels on a TCP stream: payload, then its seal."""
    return framed(payload + seal(key, sequence, payload))


def call_spec(actor, method: str, args: tuple, owner: bytes) -> tuple:
    return (os.urandom(14), actor._lr_actor_id, f"Counter.{method}",
            serialization.serialize((args, {})).inband, [], [], 1, None, 0, False, owner, 0,
            None, None)   # (TaskSpec's 14 fields: the last, driver, None: no printed output)


def dropped(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True once the listener closed this connection."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def attack_without_key(address: str, marker: str) -> None:
    """Three keyless attempts: the pickle straight away; a proof made with
    the empty key (what an --insecure cluster takes); a proof with a key made up."""
    for key in (None, b"", os.urandom(32)):
        sock = dial(address)
        try:
            if key is None:
                sock.sendall(hostile_frame(marker) * 3)
            else:
                assert not prove(sock, key), "the listener confirmed a proof made without its key"
                try:
                    sock.sendall(hostile_frame(marker))
                except (BrokenPipeError, ConnectionResetError):
                    pass
            assert dropped(sock)
        finally:
            sock.close()


def assert_reported_once(log: str, address: str) -> None:
    """Nine refused connections (attack_without_key three times) are reported
    once per kind of refusal: no proof (its first byte is not our version), a
    wrong one. (The pickle's first byte may happen to pass for the version.)"""
    lines = [line for line in log.splitlines() if f"dropped a connection to {address} " in line]
    assert 1 <= len(lines) <= 2, log
    assert len({line.rpartition(": ")[2] for line in lines}) == len(lines), log


@lightray.remote
def pid_and_next(value):
    return os.getpid(), value + 1


@lightray.remote
class Counter:
    def __init__(self):
        self.total = 0

    def add(self, amount):
        self.total += amount
        return self.total

    def pid(self):
        return os.getpid()


def leased_worker_path() -> str:
    """Run small tasks until the driver holds a lease; that worker's lease socket."""
    client = current_client_or_none()
    deadline = time.monotonic() + 10
    while not client.direct.book.leases and time.monotonic() < deadline:
        lightray.get(pid_and_next.remote(0))
    lease = next(iter(client.direct.book.leases.values()))
    return lease_stream_path(client.address, lease.worker_id)


def actor_socket(actor) -> str:
    client = current_client_or_none()
    lightray.get(actor.pid.remote())
    worker_id = client.actors.channels[actor._lr_actor_id].worker_id
    return worker_id if worker_id.startswith("tcp://") else actor_stream_path(
        client.address, worker_id)


def worker_pids() -> set:
    return {child.pid for child in psutil.Process(api._runtime.process.pid).children()}


def stream_key() -> bytes:
    return current_client_or_none().node_info["stream_key"]


# -------------------------------------------------------- without the key


@pytest.mark.timeout(60)
def test_a_keyless_client_of_a_lease_socket_gets_nothing_unpickled_and_the_worker_serves_on(
        capfd, tmp_path):
    lightray.init(num_cpus=2)   # here, not in a fixture: capfd reads its workers' logs
    path = leased_worker_path()
    workers = worker_pids()
    marker = str(tmp_path / "unpickled")
    for _ in range(3):
        attack_without_key(path, marker)
    assert [lightray.get(pid_and_next.remote(i))[1] for i in range(20)] == list(range(1, 21))
    assert not os.path.exists(marker)
    assert worker_pids() == workers
    assert_reported_once(capfd.readouterr().err, path)


@pytest.mark.timeout(60)
def test_a_keyless_client_of_an_actor_socket_gets_nothing_unpickled_and_the_actor_serves_on(
        capfd, tmp_path):
    lightray.init(num_cpus=2)   # here, not in a fixture: capfd reads its workers' logs
    counter = Counter.remote()
    path = actor_socket(counter)
    marker = str(tmp_path / "unpickled")
    for _ in range(3):
        attack_without_key(path, marker)
    assert lightray.get([counter.add.remote(1) for _ in range(10)]) == list(range(1, 11))
    assert not os.path.exists(marker)
    assert_reported_once(capfd.readouterr().err, path)


def test_stream_socket_files_are_0600(runtime):
    counter = Counter.remote()
    for path in (leased_worker_path(), actor_socket(counter)):
        assert os.stat(path).st_mode & 0o777 == 0o600, path


@pytest.mark.timeout(90)
def test_a_keyless_client_of_an_actors_tcp_listener_gets_nothing_unpickled(
        capfd, own_cluster, tmp_path):
    # Agents make and share the cluster's key by default; its stream key
    # (transport.keys.derive_stream_key) is what the listener demands.
    own_cluster.add_node(head=True)
    other = own_cluster.add_node()
    lightray.init(address=own_cluster.head.address)
    own_cluster.wait_for_nodes(2)
    assert stream_key(), "the cluster runs with no stream key"
    counter = Counter.options(scheduling_strategy=NodeAffinity(other.node_id)).remote()
    address = actor_socket(counter)
    assert address.startswith("tcp://127.0.0.1:")
    marker = str(tmp_path / "unpickled")
    for _ in range(3):
        attack_without_key(address, marker)
    assert lightray.get([counter.add.remote(2) for _ in range(5)]) == [2, 4, 6, 8, 10]
    assert not os.path.exists(marker)
    assert_reported_once(capfd.readouterr().err, address)
    check_tcp_frames_are_sealed(address, counter)


def check_tcp_frames_are_sealed(address: str, counter) -> None:
    """After the handshake, each frame on a TCP stream carries a seal bound to the
    connection and its place in it: an unsealed frame (injected into the
    connection) or a replayed one drops it; a sealed call is answered, sealed."""
    key = stream_key()
    hello = m.encode([(m.DIRECT_HELLO, b"sealed", "elsewhere")])
    injected = dial(address)
    assert prove(injected, key)
    injected.sendall(framed(hello))
    assert dropped(injected)
    injected.close()

    nonces = []
    caller = dial(address)
    assert prove(caller, key, nonces)
    ours = mac(key, b"caller frames", *nonces)
    theirs = mac(key, b"listener frames", *nonces)
    spec = call_spec(counter, "add", (100,), b"sealed")
    caller.sendall(sealed(ours, 0, hello) + sealed(ours, 1, m.encode([(m.ACTOR_CALL, spec, [])])))
    size = HEADER.unpack(recv_exactly(caller, 4))[0]
    answer = recv_exactly(caller, size)
    payload, tag = answer[:-32], answer[-32:]
    assert hmac.compare_digest(tag, seal(theirs, 0, payload))
    assert m.decode(payload)[0][:2] == (m.DIRECT_DONE, spec[0])
    caller.sendall(sealed(ours, 1, m.encode([(m.ACTOR_CALL, spec, [])])))   # a replay
    assert dropped(caller)
    caller.close()
    assert lightray.get(counter.add.remote(1)) == 111


# ------------------------------------------------- after a valid handshake

@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", ["garbage", "not ops", "oversized", "truncated"])
def test_bad_frames_after_a_valid_handshake_drop_only_that_connection(runtime, bad):
    counter = Counter.remote()
    path = actor_socket(counter)
    bystander = dial(path)
    assert prove(bystander, stream_key())
    attacker = dial(path)
    assert prove(attacker, stream_key())
    frame = {"garbage": framed(os.urandom(20)),
             "not ops": framed(pickle.dumps({"kind": m.ACTOR_CALL})),
             "oversized": HEADER.pack(stream.MAX_FRAME + 1) + b"x" * 100,
             "truncated": HEADER.pack(1000) + b"x" * 10}[bad]
    attacker.sendall(frame)
    if bad == "truncated":
        attacker.shutdown(socket.SHUT_WR)
    assert dropped(attacker)
    attacker.close()
    # The other connection still works: a call made on it by hand is answered.
    client = current_client_or_none()
    bystander.sendall(framed(m.encode([(m.DIRECT_HELLO, b"bystander")])))
    spec = call_spec(counter, "add", (5,), b"bystander")
    bystander.sendall(framed(m.encode([(m.ACTOR_CALL, spec, [])])))
    size = HEADER.unpack(recv_exactly(bystander, 4))[0]
    answer = m.decode(recv_exactly(bystander, size))
    bystander.close()
    assert answer[0][0] == m.DIRECT_DONE and answer[0][1] == spec[0]
    assert lightray.get(counter.add.remote(1)) == 6
    assert client.actors.channels[counter._lr_actor_id].state == "alive"


# ---------------------------------------------------------- another user

def _other_user():
    if os.geteuid() != 0:
        pytest.skip("creating a second local user needs root")
    if subprocess.run(["which", "useradd"], capture_output=True).returncode != 0:
        pytest.skip("no useradd on this host")
    name = f"lrt{os.getpid() % 100000}"
    created = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                              name], capture_output=True, text=True)
    if created.returncode != 0:
        pytest.skip(f"useradd failed: {created.stderr.strip()}")
    return name


def connect_as(uid: int, paths: list) -> list:
    """(path, "refused" / "dropped" / "challenged") for each path, connected to
    by a child process running as uid (forked: the venv's python may be out of
    that user's reach)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: no lightray, sockets only, leave by _exit
        try:
            os.setgid(65534)
            os.setuid(uid)
            lines = []
            for path in paths:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(5)
                try:
                    sock.connect(path)
                    lines.append(f"{path} {'challenged' if sock.recv(64) else 'dropped'}")
                except OSError:
                    lines.append(f"{path} refused")
            os.write(write_end, "\n".join(lines).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return [tuple(line.rsplit(" ", 1)) for line in text.splitlines()]


@pytest.mark.timeout(60)
def test_another_local_user_cannot_use_the_unix_stream_sockets(runtime, tmp_path):
    counter = Counter.remote()
    paths = [leased_worker_path(), actor_socket(counter)]
    name = _other_user()
    try:
        outcomes = connect_as(pwd.getpwnam(name).pw_uid, paths)
    finally:
        subprocess.run(["userdel", name], capture_output=True)
    assert len(outcomes) == 2, outcomes
    for path, outcome in outcomes:
        assert outcome in ("refused", "dropped"), (path, outcome)
    assert lightray.get(counter.add.remote(3)) == 3
    assert lightray.get(pid_and_next.remote(1))[1] == 2


# ----------------------------------------------------------------- fuzzing

_small_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=16) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
_kinds = st.sampled_from([m.EXEC, m.ACTOR_CALL, m.DIRECT_HELLO, m.DIRECT_DONE, 0, -1, 999])
_ops = st.lists(st.tuples(_kinds).flatmap(
    lambda kind: st.lists(_small_values, max_size=6).map(lambda rest: kind + tuple(rest))),
    max_size=4)
_exec_shaped = st.tuples(_small_values, _small_values).map(
    lambda parts: [(m.EXEC, (os.urandom(14), os.urandom(8), "f", None, [], [], 1, None, 0,
                             False, b"x", 0, None), parts[0], [], parts[1])])

BAD_FRAMES = st.one_of(
    st.binary(min_size=1, max_size=64),                                        # raw bytes
    st.binary(max_size=64).map(framed),                                        # not a pickle
    _ops.map(lambda ops: framed(pickle.dumps(ops))),                           # wrong kinds
    _small_values.map(lambda value: framed(pickle.dumps(value))),              # not a list
    _exec_shaped.map(lambda ops: framed(pickle.dumps(ops))),                   # bad EXEC parts
    st.integers(stream.MAX_FRAME + 1, 2 ** 32 - 1).map(HEADER.pack),           # oversized
    st.integers(5, 4096).map(lambda size: HEADER.pack(size) + b"\x80\x05"),    # truncated
)


def send_all(address: str, frames: list, key) -> None:
    """Each frame on a connection of its own, after proving key (None: no proof)."""
    for data in frames:
        sock = dial(address)
        try:
            if key is not None:
                assert prove(sock, key)
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            sock.close()


def fuzz(address: str, key: bytes, batches: int = 100, per_batch: int = 50) -> None:
    """batches x per_batch bad frames with the key and as many without."""
    for proved in (key, None):
        @settings(max_examples=batches, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(BAD_FRAMES, min_size=per_batch, max_size=per_batch))
        def run(frames):
            send_all(address, frames, proved)
        run()


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


@pytest.mark.timeout(300)
def test_ten_thousand_bad_frames_to_a_lease_socket_leave_the_worker_serving(runtime):
    path = leased_worker_path()
    worker = lightray.get(pid_and_next.remote(0))[0]
    workers = worker_pids()
    before = rss(worker)
    fuzz(path, stream_key())
    assert [lightray.get(pid_and_next.remote(i))[1] for i in range(20)] == list(range(1, 21))
    assert worker_pids() == workers
    assert rss(worker) - before < 64 << 20


@pytest.mark.timeout(300)
def test_ten_thousand_bad_frames_to_an_actor_socket_leave_the_actor_serving(runtime):
    counter = Counter.remote()
    path = actor_socket(counter)
    worker = lightray.get(counter.pid.remote())
    workers = worker_pids()
    before = rss(worker)
    fuzz(path, stream_key())
    assert lightray.get([counter.add.remote(1) for _ in range(10)]) == list(range(1, 11))
    assert lightray.get(counter.pid.remote()) == worker
    assert worker_pids() == workers
    assert rss(worker) - before < 64 << 20


# ------------------------------------------------------- the caller's side

@pytest.mark.timeout(60)
def test_a_caller_with_a_wrong_key_gets_a_clear_error_from_an_actor_not_a_hang(runtime):
    current_client_or_none().node_info["stream_key"] = os.urandom(32)
    counter = Counter.remote()
    with pytest.raises(lightray.exceptions.ActorDiedError, match="refused our proof"):
        lightray.get(counter.add.remote(1), timeout=30)


@pytest.mark.timeout(60)
def test_a_driver_with_a_wrong_key_runs_its_tasks_through_the_agent(runtime):
    current_client_or_none().node_info["stream_key"] = os.urandom(32)
    assert [lightray.get(pid_and_next.remote(i))[1] for i in range(30)] == list(range(1, 31))


@pytest.mark.timeout(60)
def test_connections_that_never_prove_the_key_cannot_lock_callers_out(runtime):
    counter = Counter.remote()
    path = actor_socket(counter)
    silent = [dial(path) for _ in range(stream.MAX_HANDSHAKING + 20)]
    try:
        caller = dial(path)
        assert prove(caller, stream_key())
        caller.close()
        assert lightray.get(counter.add.remote(7)) == 7
        # The oldest silent ones were dropped to make room.
        assert dropped(silent[0])
    finally:
        for sock in silent:
            sock.close()


# ------------------------------------------------- encryption between hosts

def tcp_pair():
    """Two ends of one TCP connection on loopback: (the connecting one, the accepted one)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        near = socket.create_connection(server.getsockname())
        far, _ = server.accept()
    return near, far


def encrypted_link(near: socket.socket):
    """An OutBuffer on near and the FrameReader of its peer, under the seal and
    cipher keys of the caller's direction of a connection with fresh nonces."""
    key, nonces = os.urandom(32), (os.urandom(32), os.urandom(32))
    seal_key = stream_proof.sealing_keys(key, *nonces)[0]
    cipher = stream_proof.cipher_keys(key, *nonces)[0]
    out = stream.OutBuffer(near)
    out.key, out.cipher = seal_key, cipher
    reader = stream.FrameReader()
    reader.key, reader.cipher = seal_key, cipher
    return out, reader


def on_the_wire(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(10)
    return recv_exactly(sock, size)


@pytest.mark.parametrize("size", [40, 5000, (2 << 20) + 17])   # one block, several blocks
def test_an_encrypted_frame_is_not_its_plaintext_and_round_trips(size):
    near, far = tcp_pair()
    try:
        out, reader = encrypted_link(near)
        marker = os.urandom(16).hex().encode()
        payloads = [marker + os.urandom(size - len(marker)) for _ in range(3)]
        wire = []
        receiving = threading.Thread(target=lambda: wire.append(
            on_the_wire(far, 3 * (4 + size + stream_proof.TAG_SIZE))))
        receiving.start()
        for payload in payloads:
            out.send(payload)
        while out.flush():
            select.select([], [near], [], 10)
        receiving.join()
        wire = wire[0]
        assert marker not in wire
        assert not any(payload[:64] in wire for payload in payloads)
        # Fed all at once and byte by byte in pieces: the same plaintexts.
        assert [bytes(frame) for frame in reader.feed(wire)] == payloads
        _, again = encrypted_link(near)
        again.key, again.cipher = reader.key, reader.cipher
        pieces = []
        for start in range(0, len(wire), 7919):
            pieces += again.feed(wire[start:start + 7919])
        assert [bytes(frame) for frame in pieces] == payloads
    finally:
        near.close()
        far.close()


def test_a_flipped_ciphertext_bit_is_refused_by_the_seal_before_anything_is_unpickled(tmp_path):
    near, far = tcp_pair()
    try:
        out, reader = encrypted_link(near)
        marker = str(tmp_path / "unpickled")
        payload = m.encode([(m.ACTOR_CALL, CreatesMarker(marker), [])])
        out.send(payload)
        wire = bytearray(on_the_wire(far, 4 + len(payload) + stream_proof.TAG_SIZE))
        wire[4 + len(payload) // 2] ^= 0x01
        with pytest.raises(stream.BadSeal):
            reader.feed(bytes(wire))
        assert not os.path.exists(marker)
    finally:
        near.close()
        far.close()


def test_no_two_frames_share_keystream():
    """The same plaintext (zeros: its ciphertext is the keystream itself) in
    many frames, both directions of two connections: no 32-byte piece of
    keystream appears twice, within a frame, across frames or connections."""
    key = os.urandom(32)
    pieces = set()
    count = 0
    for _connection in range(2):
        nonces = (os.urandom(32), os.urandom(32))
        for cipher in stream_proof.cipher_keys(key, *nonces):
            for sequence, size in enumerate([64, 64, 4096, (1 << 20) + 4096]):
                zeros = bytes(size)
                ciphertext = bytearray(size)
                cipher.apply(sequence, zeros, ciphertext)
                assert ciphertext != zeros
                for start in range(0, size - 31, 32):
                    pieces.add(bytes(ciphertext[start:start + 32]))
                    count += 1
    assert len(pieces) == count


def test_loopback_tcp_is_sealed_only_and_both_ends_agree():
    near, far = tcp_pair()
    try:
        assert not stream_cipher.encrypts(near) and not stream_cipher.encrypts(far)
    finally:
        near.close()
        far.close()
    unix_near, unix_far = socket.socketpair()
    with unix_near, unix_far:
        assert not stream_cipher.encrypts(unix_near)


def a_non_loopback_address_of_this_host() -> str:
    """The source address of this host's route out (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("203.0.113.1", 9))
            host = probe.getsockname()[0]
    except OSError as error:
        pytest.skip(f"this host has no route out, so no non-loopback address: {error}")
    if host.startswith("127."):
        pytest.skip("this host has no non-loopback address")
    return host


def test_tcp_with_one_end_off_loopback_is_encrypted_and_both_ends_agree():
    host = a_non_loopback_address_of_this_host()
    with socket.create_server((host, 0)) as server:
        # The caller's own end loopback, the listener's not: each end still sees
        # one non-loopback address, so both encrypt (a rule on the peer's
        # address alone would have them disagree).
        for source in (host, "127.0.0.1"):
            near = socket.create_connection(server.getsockname(), source_address=(source, 0))
            far, _ = server.accept()
            with near, far:
                assert stream_cipher.encrypts(near) and stream_cipher.encrypts(far), source


def encrypting_site(directory) -> None:
    """A sitecustomize that makes the agents of a test (and their workers)
    encrypt loopback TCP streams too, as if their nodes were two hosts."""
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('LIGHTRAY_TEST_ENCRYPT_LOOPBACK'):\n"
        "    from lightray.transport import stream_cipher\n"
        "    stream_cipher._ENCRYPT_LOOPBACK = True\n")


@pytest.mark.timeout(90)
def test_an_actor_called_from_another_node_over_an_encrypted_stream(
        own_cluster, tmp_path, monkeypatch):
    site = tmp_path / "encrypting"
    encrypting_site(site)
    env = {"PYTHONPATH": os.pathsep.join([str(site)] + sys.path),
           "LIGHTRAY_TEST_ENCRYPT_LOOPBACK": "1"}
    monkeypatch.setattr(stream_cipher, "_ENCRYPT_LOOPBACK", True)
    own_cluster.add_node(head=True, env=env)
    other = own_cluster.add_node(env=env)
    lightray.init(address=own_cluster.head.address)
    own_cluster.wait_for_nodes(2)
    counter = Counter.options(scheduling_strategy=NodeAffinity(other.node_id)).remote()
    address = actor_socket(counter)
    assert address.startswith("tcp://")
    assert lightray.get([counter.add.remote(2) for _ in range(5)]) == [2, 4, 6, 8, 10]
    big = Echo.options(scheduling_strategy=NodeAffinity(other.node_id)).remote()
    blob = os.urandom(3 << 20)
    assert lightray.get(big.echo.remote(blob)) == blob
    check_tcp_frames_are_encrypted(address, counter)
    marker = str(tmp_path / "unpickled")
    check_a_flipped_bit_drops_an_encrypted_stream(address, marker)
    assert lightray.get(counter.add.remote(1)) == 112
    assert not os.path.exists(marker)


@lightray.remote
class Echo:
    def echo(self, value):
        return value


def check_tcp_frames_are_encrypted(address: str, counter) -> None:
    """The listener decrypts what it takes and encrypts what it answers: a
    call sealed but not encrypted is dropped (its plaintext decrypts to
    garbage); the same call encrypted by hand is answered, encrypted."""
    key = stream_key()
    hello = m.encode([(m.DIRECT_HELLO, b"encrypted", "elsewhere")])
    nonces = []
    plain = dial(address)
    assert prove(plain, key, nonces)
    plain.sendall(sealed(mac(key, b"caller frames", *nonces), 0, hello))
    assert dropped(plain)
    plain.close()

    nonces = []
    caller = dial(address)
    assert prove(caller, key, nonces)
    ours, theirs = stream_proof.cipher_keys(key, *nonces)
    seal_ours = mac(key, b"caller frames", *nonces)
    seal_theirs = mac(key, b"listener frames", *nonces)
    spec = call_spec(counter, "add", (100,), b"encrypted")
    frames = b""
    for sequence, payload in enumerate([hello, m.encode([(m.ACTOR_CALL, spec, [])])]):
        ciphertext = bytearray(len(payload))
        ours.apply(sequence, payload, ciphertext)
        frames += sealed(seal_ours, sequence, bytes(ciphertext))
    caller.sendall(frames)
    size = HEADER.unpack(recv_exactly(caller, 4))[0]
    answer = recv_exactly(caller, size)
    caller.close()
    ciphertext, tag = answer[:-32], answer[-32:]
    assert hmac.compare_digest(tag, seal(seal_theirs, 0, ciphertext))
    with pytest.raises(m.BadMessage):
        m.decode(ciphertext)
    payload = bytearray(len(ciphertext))
    theirs.apply(0, ciphertext, payload)
    assert m.decode(bytes(payload))[0][:2] == (m.DIRECT_DONE, spec[0])
    assert lightray.get(counter.add.remote(1)) == 111


def check_a_flipped_bit_drops_an_encrypted_stream(address: str, marker: str) -> None:
    """A pickle that would create marker, encrypted and sealed as the caller's
    first frame, one ciphertext bit flipped on the way: dropped, never unpickled."""
    key = stream_key()
    nonces = []
    caller = dial(address)
    assert prove(caller, key, nonces)
    payload = m.encode([(m.DIRECT_HELLO, CreatesMarker(marker), "elsewhere")])
    ciphertext = bytearray(len(payload))
    stream_proof.cipher_keys(key, *nonces)[0].apply(0, payload, ciphertext)
    frame = bytearray(sealed(mac(key, b"caller frames", *nonces), 0, bytes(ciphertext)))
    frame[4 + len(payload) // 3] ^= 0x10
    caller.sendall(bytes(frame))
    assert dropped(caller)
    caller.close()
