"""The replicated control store (lightray.kv) side by side with etcd 3.4, in one run.

    python benchmarks/control_store.py                 # both, 3 s per case
    python benchmarks/control_store.py --seconds 5 --json out.json
    python benchmarks/control_store.py --skip-etcd     # lightray only

Both systems run 3 replicas on 127.0.0.1 on this machine, with the same
election timeout (500 ms, heartbeats every 50 ms), and are driven by the same
Python client threads attached to a member that does not lead (a client does
not know the leader): lightray through lightray.kv from a driver attached to a
follower agent, etcd through its JSON gateway (grpc-gateway, /v3/kv/...) with
one keep-alive HTTP connection per thread, to a follower member.

    writes_N           put of a new key, N concurrent writers: acknowledged writes/s,
                       latency p50 / p99 (lightray: committed on a majority, fsync'd)
    local_reads_N      lightray.kv.get (local) / etcd range serializable=true
    consistent_reads_N lightray.kv.get(consistent=True) (ReadIndex) / etcd range (linearizable)
    failover           SIGKILL of the leader -> the first acknowledged write after it

etcd comes from Debian's etcd-server package (apt-get install etcd-server); the
script says so and runs lightray alone if `etcd` is not on PATH. Targets
(issue 13): writes_64 >= 0.5x etcd, local reads >= 50,000/s, failover < 3 s.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ELECTION_MS, HEARTBEAT_MS = 500, 50       # lightray: 10 and 1 ticks of 50 ms
WRITERS = (1, 64)
READERS = (1, 64)


# ------------------------------------------------------------------ measuring

def run_threads(count: int, seconds: float, operation) -> dict:
    """count threads calling operation(thread, i) for seconds: ops/s and latencies."""
    latencies = [[] for _ in range(count)]
    errors = [0] * count
    start_line = threading.Barrier(count + 1)
    end = [0.0]

    def loop(thread: int) -> None:
        start_line.wait()
        i = 0
        own = latencies[thread]
        while True:
            started = time.perf_counter()
            if started >= end[0]:
                return
            try:
                operation(thread, i)
            except Exception:
                errors[thread] += 1
                continue
            own.append(time.perf_counter() - started)
            i += 1

    threads = [threading.Thread(target=loop, args=(t,), daemon=True) for t in range(count)]
    for thread in threads:
        thread.start()
    begun = time.perf_counter()
    end[0] = begun + seconds
    start_line.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - begun
    every = sorted(x for own in latencies for x in own)
    return {"ops_per_s": len(every) / elapsed, "errors": sum(errors),
            "p50_ms": 1000 * every[len(every) // 2] if every else None,
            "p99_ms": 1000 * every[int(len(every) * 0.99)] if every else None}


def failover(write, kill_leader) -> float:
    """Seconds from SIGKILL of the leader to the first write acknowledged after it."""
    for i in range(20):
        write(f"before-failover/{i}")
    killed = kill_leader()
    i = 0
    while True:
        try:
            write(f"after-failover/{i}")
            return time.perf_counter() - killed
        except Exception:
            i += 1
            time.sleep(0.005)


# ------------------------------------------------------------------ lightray

class Lightray:
    name = "lightray"

    def __init__(self, root: str):
        self.root = root
        self.agents = []             # (process, node id, address)

    def start(self) -> None:
        # (short: ipc socket paths inside the session directories have a length limit)
        os.environ["LIGHTRAY_TEMP_DIR"] = os.path.join(self.root, "s")
        os.environ["LIGHTRAY_HOME"] = os.path.join(self.root, "h")
        os.makedirs(os.environ["LIGHTRAY_TEMP_DIR"], exist_ok=True)
        self._agent(["--head", "--port", "0"])
        self._agent(["--address", self.agents[0][2]])
        self._agent(["--address", self.agents[0][2]])
        import lightray
        self.lightray = lightray
        lightray.init(address=self.agents[0][2])
        self._wait(lambda: sorted(map(str, self._roles().values()))
                   == ["leader", "replica", "replica"])
        # the client attaches to a follower, like etcd's
        leader = self._leader()
        follower = next(a for a in self.agents if a[1] != leader)
        lightray.shutdown()
        lightray.init(address=follower[2])
        self.attached = follower[1]

    def _agent(self, args) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        process = subprocess.Popen([sys.executable, "-m", "lightray.agent", "--num-cpus", "1",
                                    "--object-store-memory", str(256 << 20)] + args,
                                   stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   env=env, text=True)
        words = process.stdout.readline().split()
        if words[:2] != ["lightray", "agent"]:
            process.kill()
            raise RuntimeError(f"lightray-agent did not start: {words}")
        self.agents.append((process, words[2], words[-1]))

    def _roles(self) -> dict:
        return {n["node_id"]: n.get("control") for n in self.lightray.nodes() if n["alive"]}

    def _leader(self):
        return next((node for node, role in self._roles().items() if role == "leader"), None)

    def _wait(self, condition, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("the lightray cluster did not settle")
            time.sleep(0.05)

    def put(self, key: str) -> None:
        self.lightray.kv.put(key, b"x" * 16, timeout=10)

    def get(self, key: str, consistent: bool) -> None:
        self.lightray.kv.get(key, consistent=consistent, timeout=10)

    def kill_leader(self) -> float:
        leader = self._leader()
        process = next(a[0] for a in self.agents if a[1] == leader)
        assert leader != self.attached
        process.send_signal(signal.SIGKILL)
        return time.perf_counter()

    def stop(self) -> None:
        if getattr(self, "lightray", None) is not None and self.lightray.is_initialized():
            self.lightray.shutdown()
        for process, _, _ in self.agents:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _, _ in self.agents:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
        from lightray.agent.session import reclaim_dead_sessions
        reclaim_dead_sessions()


# ------------------------------------------------------------------ etcd

class Etcd:
    name = "etcd"

    def __init__(self, root: str):
        self.root = root
        self.members = []            # (process, name, client port)
        self.local = threading.local()
        self.request_timeout = 10.0  # seconds; 1 during failover, so a request stuck
                                     # at the dead leader is retried (etcd would wait ~5 s)

    def start(self) -> None:
        names = ["m1", "m2", "m3"]
        peers = ",".join(f"{n}=http://127.0.0.1:{23800 + k + 1}" for k, n in enumerate(names))
        for k, name in enumerate(names):
            client, peer = 23790 + k + 1, 23800 + k + 1
            process = subprocess.Popen(
                ["etcd", "--name", name, "--data-dir", os.path.join(self.root, name),
                 "--listen-client-urls", f"http://127.0.0.1:{client}",
                 "--advertise-client-urls", f"http://127.0.0.1:{client}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", peers, "--initial-cluster-state", "new",
                 "--heartbeat-interval", str(HEARTBEAT_MS),
                 "--election-timeout", str(ELECTION_MS),
                 "--logger", "zap", "--log-level", "error"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.members.append((process, name, client))
        deadline = time.monotonic() + 30
        while True:
            try:
                statuses = {port: self._status(port) for _, _, port in self.members}
                if all(s.get("leader") for s in statuses.values()):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("etcd did not elect a leader")
            time.sleep(0.1)
        leader = next(iter(statuses.values()))["leader"]
        self.ids = {port: s["header"]["member_id"] for port, s in statuses.items()}
        self.port = next(port for port, member in self.ids.items() if member != leader)

    def _status(self, port: int) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("POST", "/v3/maintenance/status", "{}")
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def _post(self, path: str, body: dict) -> dict:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = self.local.connection = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.request_timeout)
        try:
            connection.request("POST", path, json.dumps(body),
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError):
            connection.close()
            self.local.connection = None
            raise
        if response.status != 200 or "error" in answer:
            raise RuntimeError(f"etcd: {response.status} {answer}")
        return answer

    def put(self, key: str) -> None:
        self._post("/v3/kv/put", {"key": _b64(key.encode()), "value": _b64(b"x" * 16)})

    def get(self, key: str, consistent: bool) -> None:
        self._post("/v3/kv/range", {"key": _b64(key.encode()), "serializable": not consistent})

    def kill_leader(self) -> float:
        self.request_timeout = 1.0
        if getattr(self.local, "connection", None) is not None:
            self.local.connection.close()
            self.local.connection = None
        leader = self._status(self.port)["leader"]
        process = next(p for p, _, port in self.members if self.ids[port] == leader)
        process.send_signal(signal.SIGKILL)
        return time.perf_counter()

    def stop(self) -> None:
        for process, _, _ in self.members:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _, _ in self.members:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ------------------------------------------------------------------ the run

def measure(system, seconds: float) -> dict:
    results = {}
    for writers in WRITERS:
        results[f"writes_{writers}"] = run_threads(
            writers, seconds, lambda t, i, w=writers: system.put(f"w{w}/{t}/{i}"))
    for readers in READERS:
        for consistent in (False, True):
            name = f"{'consistent' if consistent else 'local'}_reads_{readers}"
            results[name] = run_threads(
                readers, seconds,
                lambda t, i, c=consistent: system.get(f"w1/0/{i % 100}", c))
    results["failover_s"] = failover(system.put, system.kill_leader)
    return results


def run(system_class, root: str, seconds: float) -> dict:
    system = system_class(os.path.join(root, system_class.name))
    os.makedirs(system.root, exist_ok=True)
    try:
        system.start()
        return measure(system, seconds)
    finally:
        system.stop()


def report(results: dict) -> None:
    names = list(results)
    cases = list(next(iter(results.values())))
    header = "| case | " + " | ".join(f"{n}" for n in names)
    if len(names) == 2:
        header += f" | {names[0]}/{names[1]}"
    print(header + " |")
    print("|" + "---|" * (len(names) + 1 + (len(names) == 2)))
    for case in cases:
        cells, values = [], []
        for name in names:
            value = results[name][case]
            if isinstance(value, dict):
                cells.append(f"{value['ops_per_s']:,.0f}/s (p50 {value['p50_ms']:.2f} ms, "
                             f"p99 {value['p99_ms']:.2f} ms"
                             + (f", {value['errors']} errors" if value["errors"] else "")
                             + ")")
                values.append(value["ops_per_s"])
            else:
                cells.append(f"{value:.2f} s")
                values.append(value)
        row = f"| {case} | " + " | ".join(cells)
        if len(names) == 2:
            row += f" | {values[0] / values[1]:.2f}x"
        print(row + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per case (default 3)")
    parser.add_argument("--skip-etcd", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    options = parser.parse_args()
    systems = [Lightray]
    if not options.skip_etcd:
        if shutil.which("etcd"):
            systems.append(Etcd)
        else:
            print("etcd is not on PATH (apt-get install etcd-server): lightray alone",
                  file=sys.stderr)
    root = tempfile.mkdtemp(prefix="lrcb-")
    results = {}
    try:
        for system_class in systems:
            print(f"running {system_class.name} ...", file=sys.stderr, flush=True)
            results[system_class.name] = run(system_class, root, options.seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(results)
    if options.json:
        with open(options.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
