"""RefusalLog: the first refusal of a key is reported, the rest of the minute counted."""
import os

from lightray.transport.guard import MAX_KEYS, RefusalLog, describe_peer


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def read_all(fd):
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode()


def make_log():
    r, w = os.pipe()
    clock = Clock()
    return RefusalLog("agent", clock=clock, fd=w), clock, r, w


def test_a_flood_from_one_peer_is_reported_once_per_minute_with_a_count():
    log, clock, r, w = make_log()
    written = [log.note("peer-a", "refused a keyless peer") for _ in range(1000)]
    assert written.count(True) == 1
    clock.now += 61
    assert log.note("peer-a", "refused a keyless peer")
    lines = read_all(r).splitlines()
    assert lines == ["agent: refused a keyless peer",
                     "agent: refused a keyless peer (999 more since the last report)"]
    assert log.total == 1001
    os.close(r), os.close(w)


def test_each_peer_gets_its_own_first_report():
    log, clock, r, w = make_log()
    assert log.note("a", "bad frame from a")
    assert log.note("b", "bad frame from b")
    assert not log.note("a", "bad frame from a")
    assert read_all(r).splitlines() == ["agent: bad frame from a", "agent: bad frame from b"]
    os.close(r), os.close(w)


def test_a_flood_of_new_keys_keeps_memory_bounded():
    log, clock, r, w = make_log()
    for n in range(MAX_KEYS + 500):
        log.note(n, "x")
        read_all(r)
    assert len(log.last_report) <= MAX_KEYS
    assert len(log.suppressed) <= MAX_KEYS
    os.close(r), os.close(w)


def test_peer_names_are_printable_and_bounded_whatever_the_bytes():
    name = describe_peer(b"\xff\xfe\n" + b"x" * 500)
    assert name.isprintable() and len(name) < 300
    assert "\n" not in name
