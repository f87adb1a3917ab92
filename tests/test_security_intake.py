"""The agent's ipc intake drops malformed ops and frames, and says so once per kind."""
import os
import pickle

from lightray.agent.intake import Intake
from lightray.transport import messages as m
from lightray.transport.guard import RefusalLog


def _intake():
    read, write = os.pipe()
    os.set_blocking(read, False)
    return Intake("lr_test_", RefusalLog("agent", fd=write)), read


def test_wrong_shapes_are_dropped_and_reported_once_per_kind():
    intake, log = _intake()
    good = (m.INC, [b"o" * 16])
    frame = m.encode([(m.SUBMIT, None), (m.DONE,), (m.INC, "x" * 10**6), good, "junk"])
    for _ in range(100):
        assert intake.read(b"cs", frame) == [good]
    lines = os.read(log, 1 << 20).decode().splitlines()
    assert len(lines) == 4          # SUBMIT, DONE, INC, not an op: one line each
    assert intake.log.total == 400


def test_a_frame_that_does_not_unpickle_or_has_no_header_is_dropped():
    intake, _ = _intake()
    header = m.encode([])[:m.HEADER_SIZE]
    assert intake.read(b"cs", header + b"\x80\x05garbage") is None
    assert intake.read(b"cs", header + pickle.dumps({"not": "a list"})) is None
    assert intake.read(b"cs", pickle.dumps([(m.INC, [b"o" * 16])])) is None   # no header


def test_a_layout_outside_the_agents_segments_is_refused():
    intake, _ = _intake()
    outside = (m.PUT, b"o" * 16, (1, ("/etc/passwd", 10, 0, ())), [])
    ours = (m.PUT, b"o" * 16, (1, ("lr_test_abc", 10, 0, ())), [])
    assert intake.read(b"cs", m.encode([outside, ours])) == [ours]
