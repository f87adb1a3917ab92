"""Traffic between two hosts, for real: agents in network namespaces, a packet capture.

    ns1 ── br0 10.213.7.1 ─┬─ veth ── ns2 10.213.7.2   (the capture: ns1's end of this veth)
     head agent            └─ veth ── ns3 10.213.7.3   (an intruder without the key)
                                   joining agent + a driver

The driver on ns2's agent runs SPREAD tasks and calls an actor on the head's
node, its arguments and results carrying a random marker. Every packet on
ns2's veth is captured (an AF_PACKET socket in ns1; no tcpdump needed): the
marker is in none of them (the mesh is CURVE, the actor's TCP stream
encrypted), and the results are right. A process in ns3 without the key
sends a pickle whose unpickling would create a file to both agents' mesh
ports (a plain ZeroMQ DEALER) and to the actor's TCP listener: it gets no
answer, the file never appears, and the cluster serves on.

Needs root (``ip netns add``); skipped with the reason otherwise. The
namespaces (names with a random suffix), their addresses and every process
go in the fixture's cleanup, even when the test fails.

This file is also the script its processes run in the namespaces:
``python test_security_netns.py capture|driver|intruder ...``.
"""
import json
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THIS = os.path.abspath(__file__)
SUBNET = "10.213.7"
HEAD_IP, NODE_IP, INTRUDER_IP = f"{SUBNET}.1", f"{SUBNET}.2", f"{SUBNET}.3"
START_TIMEOUT = 30.0


# ------------------------------------------------------------- the network

def ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip"] + (["netns", "exec", namespace, "ip"] if namespace else []) + list(args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")


class Network:
    """Three namespaces: ns1 holds a bridge with its own address; ns2 and ns3
    each hang on it by a veth pair. Nothing is routed anywhere else."""

    def __init__(self):
        suffix = os.urandom(3).hex()
        self.names = [f"lr{suffix}{n}" for n in (1, 2, 3)]
        self.made: list = []
        self.capture_device = "to2"   # ns1's end of ns2's veth

    def make(self) -> None:
        ns1, ns2, ns3 = self.names
        for name in self.names:
            ip("netns", "add", name)
            self.made.append(name)
            ip("link", "set", "lo", "up", namespace=name)
        ip("link", "add", "br0", "type", "bridge", namespace=ns1)
        ip("addr", "add", f"{HEAD_IP}/24", "dev", "br0", namespace=ns1)
        ip("link", "set", "br0", "up", namespace=ns1)
        for device, (name, address) in (("to2", (ns2, NODE_IP)), ("to3", (ns3, INTRUDER_IP))):
            ip("link", "add", device, "type", "veth", "peer", "name", "eth0", "netns", name,
               namespace=ns1)
            ip("link", "set", device, "master", "br0", namespace=ns1)
            ip("link", "set", device, "up", namespace=ns1)
            ip("addr", "add", f"{address}/24", "dev", "eth0", namespace=name)
            ip("link", "set", "eth0", "up", namespace=name)

    def remove(self) -> None:
        for name in self.made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
        self.made.clear()


class Processes:
    """The processes a test starts in the namespaces; all stopped at the end."""

    def __init__(self, env: dict):
        self.env = env
        self.started: list = []

    def start(self, namespace: str, *args: str, stdin=subprocess.DEVNULL,
              env: dict | None = None) -> subprocess.Popen:
        # ip netns exec execs the command: the process we get is the command.
        process = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable] + list(args),
                                   stdin=stdin, stdout=subprocess.PIPE, text=True,
                                   env=dict(self.env, **(env or {})))
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
        self.started.clear()


def read_line(process: subprocess.Popen, timeout: float = START_TIMEOUT) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError(f"{process.args[4:]} printed nothing in {timeout} s "
                           f"(exit code {process.poll()})")
    return line.strip()


@pytest.fixture
def namespaces(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    network = Network()
    try:
        network.make()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        network.remove()
        pytest.skip(f"cannot make network namespaces here: {error}")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = dict(os.environ, LIGHTRAY_HOME=str(home),
               PYTHONPATH=os.pathsep.join([REPO] + [p for p in os.environ.get(
                   "PYTHONPATH", "").split(os.pathsep) if p]))
    env.pop("LIGHTRAY_CLUSTER_KEY", None)
    processes = Processes(env)
    try:
        yield network, processes
    finally:
        processes.stop_all()
        network.remove()
        from lightray.agent.session import reclaim_dead_sessions
        reclaim_dead_sessions()


# ----------------------------------------------------------------- the test

@pytest.mark.timeout(120)
def test_traffic_between_namespaces_is_encrypted_and_a_keyless_intruder_gets_nowhere(
        namespaces, tmp_path):
    network, processes = namespaces
    ns1, ns2, ns3 = network.names
    key = str(tmp_path / "cluster.key")
    made = subprocess.run([sys.executable, "-m", "lightray.agent", "--make-cluster-key", key],
                          capture_output=True, text=True, env=processes.env, timeout=30)
    assert made.returncode == 0, made.stderr
    agent = ["-m", "lightray.agent", "--num-cpus", "1", "--object-store-memory", str(256 << 20),
             "--cluster-key", key]
    head = processes.start(ns1, *agent, "--head", "--port", "0", "--bind", HEAD_IP)
    head_words = read_line(head).split()          # lightray agent ID listening on ADDRESS
    head_id, head_address = head_words[2], head_words[-1]
    assert head_address.startswith(f"{HEAD_IP}:"), head_words
    node = processes.start(ns2, *agent, "--address", head_address, "--bind", NODE_IP)
    node_address = read_line(node).split()[-1]
    assert node_address.startswith(f"{NODE_IP}:"), node_address

    packets = str(tmp_path / "packets")
    capture = processes.start(ns1, THIS, "capture", network.capture_device, packets)
    assert read_line(capture) == "capturing"
    probe = os.urandom(16).hex()
    processes.start(ns2, THIS, "probe", probe).wait(timeout=30)

    marker = os.urandom(32).hex()
    driver = processes.start(ns2, THIS, "driver", node_address, head_id, marker,
                             stdin=subprocess.PIPE, env={"LIGHTRAY_CLUSTER_KEY": key})
    first = json.loads(read_line(driver, 60))
    assert first["spread_nodes"] == 2, first
    assert first["tasks_right"] and first["actor_right"], first
    actor_address = first["actor_address"]
    assert actor_address.startswith(f"tcp://{HEAD_IP}:"), actor_address

    unpickled = str(tmp_path / "unpickled")
    intruder = processes.start(ns3, THIS, "intruder", unpickled, head_address, node_address,
                               actor_address)
    attempts = json.loads(read_line(intruder, 60))
    assert attempts["mesh_answers"] == 0, attempts
    assert attempts["stream_answers"] == 0, attempts
    assert attempts["stream_dropped"], attempts

    driver.stdin.write("again\n")
    driver.stdin.flush()
    second = json.loads(read_line(driver, 60))
    assert second["tasks_right"] and second["actor_right"], second
    assert driver.wait(timeout=30) == 0
    capture.send_signal(signal.SIGTERM)
    assert capture.wait(timeout=15) == 0
    assert not os.path.exists(unpickled)

    frames = read_capture(packets)
    streams = tcp_streams(frames)
    assert any(probe.encode() in frame for frame in frames), "the capture missed ns2's traffic"
    port = int(actor_address.rpartition(":")[2])
    actor_bytes = sum(len(data) for (ends, data) in streams.items() if port in
                      (ends[1], ends[3]))
    assert actor_bytes > 2 * BLOB_SIZE, "the actor's stream crossed the veth unseen"
    for needle in (marker.encode(), bytes.fromhex(marker)):
        assert not any(needle in frame for frame in frames), "plaintext in a packet"
        assert not any(needle in data for data in streams.values()), "plaintext in a stream"


# --------------------------------------------------------- reading packets

def read_capture(path: str) -> list:
    frames = []
    with open(path, "rb") as file:
        data = file.read()
    position = 0
    while position + 4 <= len(data):
        size = struct.unpack_from("<I", data, position)[0]
        frames.append(data[position + 4:position + 4 + size])
        position += 4 + size
    return frames


def tcp_streams(frames: list) -> dict:
    """(src ip, src port, dst ip, dst port) -> the TCP payload bytes of that
    direction in sequence order (each segment once), from Ethernet frames."""
    segments: dict = {}
    for frame in frames:
        if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue   # not IPv4 TCP
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, 16)[0]
        tcp = 14 + ihl
        sport, dport, sequence = struct.unpack_from("!HHI", frame, tcp)
        offset = (frame[tcp + 12] >> 4) * 4
        payload = frame[tcp + offset:14 + total]
        if payload:
            ends = (frame[26:30], sport, frame[30:34], dport)
            segments.setdefault(ends, {})[sequence] = payload
    return {ends: b"".join(pieces[s] for s in sorted(pieces))
            for ends, pieces in segments.items()}


# --------------------------------------- the processes in the namespaces

BLOB_SIZE = 1 << 20


def _capture(device: str, path: str) -> None:
    """Write every frame seen on device to path (4-byte length, frame) until SIGTERM."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sock.bind((device, 0))
    sock.settimeout(0.1)
    with open(path, "wb") as out:
        print("capturing", flush=True)
        while not stopping:
            try:
                frame = sock.recv(1 << 18)
            except (socket.timeout, InterruptedError):
                continue
            out.write(struct.pack("<I", len(frame)) + frame)


def _probe(text: str) -> None:
    """A plaintext datagram across the veth: the capture must see it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(text.encode(), (HEAD_IP, 9))
    time.sleep(0.2)


def _driver(address: str, head_id: str, marker: str) -> None:
    import lightray
    from lightray import NodeAffinity
    from lightray.runtime import current_client_or_none

    @lightray.remote
    def echo_where(text):
        return lightray.get_runtime_context().node_id, text + "|" + text

    @lightray.remote
    class Keeper:
        def keep(self, text, blob):
            return lightray.get_runtime_context().node_id, text + "!", blob

    def run(keeper) -> dict:
        texts = [f"{marker}-{i}" for i in range(20)]
        answers = lightray.get([echo_where.options(scheduling_strategy="SPREAD").remote(text)
                                for text in texts])
        blob = bytes.fromhex(marker) * (BLOB_SIZE // 32)
        where, text, kept = lightray.get(keeper.keep.remote(marker, blob))
        return {"spread_nodes": len({node for node, _ in answers}),
                "tasks_right": [answer for _, answer in answers]
                == [f"{text}|{text}" for text in texts],
                "actor_right": where == head_id and text == marker + "!" and kept == blob}

    lightray.init(address=address)
    keeper = Keeper.options(scheduling_strategy=NodeAffinity(head_id)).remote()
    outcome = run(keeper)
    channel = current_client_or_none().actors.channels[keeper._lr_actor_id]
    outcome["actor_address"] = channel.worker_id
    print(json.dumps(outcome), flush=True)
    sys.stdin.readline()          # the intruder had its go
    print(json.dumps(run(keeper)), flush=True)
    lightray.shutdown()


class _CreatesFile:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _intruder(unpickled: str, head: str, node: str, actor: str) -> None:
    import zmq

    from lightray.transport import messages as m
    hostile = pickle.dumps([(m.HELLO, _CreatesFile(unpickled))])
    framed_ops = m.encode([(m.HELLO, _CreatesFile(unpickled))])   # with lightray's header
    outcome = {"mesh_answers": 0, "stream_answers": 0, "stream_dropped": False}
    context = zmq.Context()
    for address in (head, node):
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"tcp://{address}")
        for payload in (hostile, framed_ops, os.urandom(64)):
            dealer.send(payload)
        if dealer.poll(2000):
            outcome["mesh_answers"] += 1
        dealer.close()
    context.term()
    host, _, port = actor[len("tcp://"):].rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack("<I", len(hostile)) + hostile)
        received = b""
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    outcome["stream_dropped"] = True
                    break
                received += chunk
        except ConnectionResetError:
            outcome["stream_dropped"] = True
        # The listener's challenge is all a stranger ever gets from it.
        if len(received) > 37 or not received.startswith(b"LRST"):
            outcome["stream_answers"] += 1
    print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    {"capture": _capture, "probe": _probe, "driver": _driver,
     "intruder": _intruder}[sys.argv[1]](*sys.argv[2:])
