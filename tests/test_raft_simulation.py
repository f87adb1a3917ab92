"""The Raft core under a thousand seeded schedules of lost, duplicated, delayed and
reordered messages, partitions, crashes and restarts (tests/raft_sim.py has the
network and the checks). A failing seed names the command that replays it.

A longer search: LIGHTRAY_RAFT_SIM_SEEDS=100000 python -m pytest tests/test_raft_simulation.py
(or python tests/raft_sim.py --seeds 0:100000)."""
from __future__ import annotations

import os
import sys
from collections import Counter

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from raft_sim import SafetyViolation, run_seed  # noqa: E402

from lightray.store.control.raft.log import RaftLog  # noqa: E402

SEEDS = int(os.environ.get("LIGHTRAY_RAFT_SIM_SEEDS", "1000"))
# Blocks of at most 1,000 seeds (10 ms to 0.2 s each, on a loaded machine),
# each with a time limit that grows with its seeds (1 s a seed): the long
# search is never cut by pytest-timeout's per-test default (setup.cfg),
# whatever SEEDS is.
BLOCKS = max(10, -(-SEEDS // 1000))
BLOCK_TIMEOUT = max(120, 1.0 * -(-SEEDS // BLOCKS))


@pytest.mark.timeout(BLOCK_TIMEOUT)
@pytest.mark.parametrize("block", range(BLOCKS))
def test_random_schedules_keep_every_safety_property_and_recover_after_healing(block):
    first, last = block * SEEDS // BLOCKS, (block + 1) * SEEDS // BLOCKS
    for seed in range(first, last):
        run_seed(seed)       # raises SafetyViolation naming the seed and its replay command


def test_the_schedules_exercise_every_fault_and_feature():
    seen = Counter()
    for seed in range(40):
        seen += run_seed(seed).stats
    for what in ("crashes", "crashes_before_fsync", "leaders_elected", "sent_pre_vote",
                 "sent_vote", "snapshots_installed", "membership_changes_applied",
                 "reads_answered", "sent_read_index_resp", "sent_timeout_now"):
        assert seen[what] > 0, f"no schedule exercised {what}: {dict(seen)}"


def test_a_seed_replays_exactly():
    first, second = run_seed(7), run_seed(7)
    assert first.committed == second.committed and first.stats == second.stats
    assert first.time == second.time


def test_the_checks_catch_replicas_that_vote_without_comparing_logs(monkeypatch):
    # The checker is only worth something if it fails a broken core: this one grants
    # votes to candidates that lack committed entries.
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    with pytest.raises(SafetyViolation, match=r"replay with: .*--seed \d+"):
        for seed in range(50):
            run_seed(seed)
