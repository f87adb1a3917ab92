"""Worker output to the driver (issue 16): what tasks and actor methods print
reaches the driver that submitted them, line by line, prefixed with who
printed it, from any node; init(log_to_driver=False) keeps it in the
workers' log files only (lightray.output)."""
import os
import sys

import pytest
from conftest import wait_for

import lightray
from lightray import NodeAffinity, api
from lightray.output import printer
from lightray.output.lines import MAX_LINE, STDERR, STDOUT, prefix, valid_batch
from lightray.output.logfile import BoundedLog, worker_log_path
from lightray.output.relay import OutputRelay
from lightray.transport import messages as m

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def embedded():
    lightray.init(num_cpus=1)
    try:
        yield
    finally:
        lightray.shutdown()


@lightray.remote
def read_array(n):
    print(f"reading {n}")
    print(f"warning {n}", file=sys.stderr)
    return os.getpid()


@lightray.remote
def inner():
    print("inner says hi")
    return os.getpid()


@lightray.remote
def outer():
    return lightray.get(inner.remote())


@lightray.remote
def raw_bytes():
    sys.stdout.buffer.write(b"bytes \xff\xfe end\n")
    print("no newline at the end", end="")
    return os.getpid()


@lightray.remote
class Reader:
    def __init__(self):
        print("reader made")

    def read(self, n):
        print(f"method read {n}")
        return os.getpid()


def captured_when(capsys, predicate, timeout=15.0):
    """(out, err) captured so far, polled until predicate(out, err) holds."""
    seen = ["", ""]

    def check():
        out, err = capsys.readouterr()
        seen[0] += out
        seen[1] += err
        return predicate(seen[0], seen[1])

    wait_for(check, timeout)
    return seen[0], seen[1]


def node_of_driver():
    return lightray.get_runtime_context().node_id


def test_a_tasks_print_reaches_the_driver_stdout_with_its_prefix(embedded, capsys):
    pid = lightray.get(read_array.remote(1))
    line = f"{prefix('read_array', pid, node_of_driver())} reading 1"
    out, _ = captured_when(capsys, lambda out, err: line in out)
    assert line in out.splitlines()
    assert "(read_array pid=" in line and f"node={node_of_driver()[:6]})" in line


def test_a_tasks_stderr_goes_to_the_driver_stderr(embedded, capsys):
    pid = lightray.get(read_array.remote(2))
    line = f"{prefix('read_array', pid, node_of_driver())} warning 2"
    out, err = captured_when(capsys, lambda out, err: line in err and "reading 2" in out)
    assert line in err.splitlines()
    assert "warning 2" not in out


def test_lines_printed_through_the_agent_are_printed_before_get_returns(monkeypatch, capsys):
    # Through the agent, a task's lines and its result travel one ordered path.
    monkeypatch.setenv("LIGHTRAY_DIRECT_SUBMIT", "0")
    lightray.init(num_cpus=1)
    try:
        for n in range(5):
            pid = lightray.get(read_array.remote(n))
            out, err = capsys.readouterr()
            assert f"{prefix('read_array', pid, node_of_driver())} reading {n}" in out
            assert f"warning {n}" in err
    finally:
        lightray.shutdown()


def test_a_nested_tasks_print_goes_to_the_root_driver(embedded, capsys):
    pid = lightray.get(outer.remote())
    line = f"{prefix('inner', pid, node_of_driver())} inner says hi"
    out, _ = captured_when(capsys, lambda out, err: line in out)
    assert line in out.splitlines()


def test_an_actor_methods_print_has_the_class_and_method_prefix(embedded, capsys):
    reader = Reader.remote()
    pid = lightray.get(reader.read.remote(7))
    node = node_of_driver()
    method_line = f"{prefix('Reader.read', pid, node)} method read 7"
    init_line = f"{prefix('Reader.__init__', pid, node)} reader made"
    out, _ = captured_when(capsys, lambda out, err: method_line in out and init_line in out)
    assert out.index(init_line) < out.index(method_line)


def test_invalid_utf8_is_printed_with_replacement_and_a_last_line_without_newline_too(
        embedded, capsys):
    pid = lightray.get(raw_bytes.remote())
    head = prefix("raw_bytes", pid, node_of_driver())
    out, _ = captured_when(capsys, lambda out, err: "no newline at the end" in out)
    assert f"{head} bytes \ufffd\ufffd end" in out.splitlines()
    assert f"{head} no newline at the end" in out.splitlines()


def test_log_to_driver_false_keeps_the_lines_in_the_worker_log_only(capsys):
    lightray.init(num_cpus=1, log_to_driver=False)
    try:
        pid = lightray.get(read_array.remote(3))
        log_path = worker_log_path(api._runtime.session_dir, pid)
        assert wait_for(lambda: os.path.exists(log_path)
                        and "warning 3" in open(log_path).read())
        lightray.get(read_array.remote(4))   # a second round trip after the first lines
        out, err = capsys.readouterr()
        assert "reading" not in out and "warning" not in err
    finally:
        lightray.shutdown()


def test_log_to_driver_must_be_a_bool_and_local_mode_refuses_false():
    with pytest.raises(TypeError, match="log_to_driver must be True or False"):
        lightray.init(num_cpus=1, log_to_driver="no")
    with pytest.raises(ValueError, match="log_to_driver=False cannot be used with local_mode"):
        lightray.init(local_mode=True, log_to_driver=False)
    assert not lightray.is_initialized()


def test_in_local_mode_a_tasks_print_is_the_drivers_own_print(capsys):
    # Tasks run in the driver's threads: print writes to its sys.stdout
    # directly, without a prefix, and nothing is relayed.
    lightray.init(local_mode=True, num_cpus=1)
    try:
        lightray.get(read_array.remote(5))
        out, err = capsys.readouterr()
        assert out == "reading 5\n" and err == "warning 5\n"
    finally:
        lightray.shutdown()


def test_a_task_on_another_node_prints_to_the_submitting_driver(own_cluster, capsys):
    own_cluster.add_node(head=True)
    other = own_cluster.add_node()
    lightray.init(address=own_cluster.head.address)
    own_cluster.wait_for_nodes(2)
    pid = lightray.get(read_array.options(scheduling_strategy=NodeAffinity(other.node_id)).remote(9))
    line = f"{prefix('read_array', pid, other.node_id)} reading 9"
    err_line = f"{prefix('read_array', pid, other.node_id)} warning 9"
    out, err = captured_when(capsys, lambda out, err: line in out and err_line in err)
    assert line in out.splitlines() and err_line in err.splitlines()
    reader = Reader.options(scheduling_strategy=NodeAffinity(other.node_id)).remote()
    pid = lightray.get(reader.read.remote(8))
    line = f"{prefix('Reader.read', pid, other.node_id)} method read 8"
    out, _ = captured_when(capsys, lambda out, err: line in out)
    assert line in out.splitlines()


# ------------------------------------------------------- parts, without processes

def test_a_batch_of_the_wrong_shape_is_refused_everywhere():
    assert valid_batch([(STDOUT, "a"), (STDERR, "b")])
    for bad in ([], None, [(3, "x")], [(STDOUT, b"bytes")], [(True, "x")], [("1", "x")],
                [(STDOUT, "x" * (MAX_LINE + 100))], [(STDOUT, "x", "y")], [[STDOUT, "x"]]):
        assert not valid_batch(bad), bad


def test_the_driver_printer_drops_garbage_and_survives_a_closed_stream(monkeypatch, capsys):
    printer.print_batch("not a batch")
    printer.print_batch([(STDOUT, 123)])
    assert capsys.readouterr() == ("", "")

    class Closed:
        encoding = "ascii"

        def write(self, text):
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr(sys, "stdout", Closed())
    printer.print_batch([(STDOUT, "lost, not fatal")])


def test_a_line_the_drivers_stream_cannot_encode_is_printed_with_replacement(monkeypatch):
    import io
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii", errors="strict")
    monkeypatch.setattr(sys, "stdout", stream)
    printer.print_batch([(STDOUT, "caf\u00e9 \u2603")])
    stream.flush()
    assert raw.getvalue() == b"caf? ?\n"


class _View:
    def __init__(self, alive):
        self.alive = alive


class _Client:
    def __init__(self, client_id, kind):
        self.client_id, self.kind, self.identity = client_id, kind, client_id + b"r"


class _Effects:
    def __init__(self):
        import collections
        self.outbox = collections.defaultdict(list)
        self.peer_outbox = collections.defaultdict(list)


def test_the_relay_sends_lines_to_a_local_driver_or_the_drivers_node_only():
    effects = _Effects()
    clients = {b"drv": _Client(b"drv", "driver"), b"wrk": _Client(b"wrk", "worker")}
    relay = OutputRelay(effects, "here", clients, {"there": _View(True), "dead": _View(False)},
                        {}, {})
    lines = [(STDOUT, "x")]
    relay.from_worker("here/drv", lines)
    relay.from_worker("here/wrk", lines)       # not a driver
    relay.from_worker("here/gone", lines)      # not connected
    relay.from_worker("there/drv2", lines)
    relay.from_worker("dead/drv3", lines)      # not an alive peer
    relay.from_worker("nowhere/drv4", lines)
    assert dict(effects.outbox) == {b"drvr": [(m.OUTPUT, lines)]}
    assert dict(effects.peer_outbox) == {"there": [(m.OUTPUT_RELAY, "drv2", lines)]}
    assert relay.dropped == 4
    rest = relay.take_peer_ops("there", [(m.OUTPUT_RELAY, "drv", lines), (m.FREE, [])])
    assert rest == [(m.FREE, [])]
    assert effects.outbox[b"drvr"] == [(m.OUTPUT, lines), (m.OUTPUT, lines)]


def test_a_workers_log_file_is_rotated_so_it_never_takes_more_than_twice_its_bound(tmp_path):
    log = BoundedLog(str(tmp_path / "logs" / "worker-1.log"), max_bytes=4096)
    for n in range(2000):
        log.write_lines([f"line {n} " + "x" * 40])
    log.close()
    current = tmp_path / "logs" / "worker-1.log"
    rotated = tmp_path / "logs" / "worker-1.log.1"
    assert current.stat().st_size <= 4096 and rotated.stat().st_size <= 4096
    assert current.read_text().splitlines()[-1].startswith("line 1999 ")
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
        "worker-1.log", "worker-1.log.1"]
    assert oct(current.stat().st_mode & 0o777) == "0o600"


class _SendingClient:
    def __init__(self):
        self.sent = []

    def send(self, ops):
        self.sent.extend(ops)


def test_a_call_that_prints_nothing_sends_nothing_and_one_that_does_sends_before_it_ends(
        tmp_path):
    from lightray.output.capture import OutputCapture
    from lightray.runtime_context import current_call

    client = _SendingClient()
    capture = OutputCapture(client, str(tmp_path), "abcdef123456")
    try:
        call = capture.call("quiet", "node/driver")
        assert capture.end_call(call) is False and client.sent == []
        call = capture.call("chatty", "node/driver")
        token = current_call.set(call)
        try:
            capture.write(STDOUT, "half a line")
            capture.write(STDOUT, ", then the rest\nand no newline")
            capture.write(STDERR, "p" * (MAX_LINE + 10))   # too long to wait for its newline
        finally:
            current_call.reset(token)
        assert capture.end_call(call) is True
        head = prefix("chatty", os.getpid(), "abcdef123456")
        lines = [item for op in client.sent for item in op[2]]
        assert {op[:2] for op in client.sent} == {(m.WORKER_OUTPUT, "node/driver")}
        assert (STDOUT, f"{head} half a line, then the rest") in lines
        assert (STDOUT, f"{head} and no newline") in lines
        assert any(stream == STDERR and line.startswith(f"{head} ppp") for stream, line in lines)
        logged = open(worker_log_path(str(tmp_path), os.getpid())).read().splitlines()
        assert f"{head} half a line, then the rest" in logged
    finally:
        capture.close()
