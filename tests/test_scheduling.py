"""The placement policy (lightray.scheduling.choose_node) on hand-built node views.

No runtime, no processes: each test builds the views an agent would hold
(amounts in units of 1/10,000, through to_units) and checks where a task goes.
Strategies are passed to choose_node encoded, as they travel in a task spec
(encode_strategy): None, "SPREAD" or ("node", node id, soft).
"""
import pytest

import lightray
from lightray.scheduling import (
    NodeAffinity,
    NodeView,
    choose_node,
    encode_strategy,
    is_hot,
    to_units,
)

ONE_CPU = to_units({"CPU": 1})
TWO_CPUS = to_units({"CPU": 2})


def node(node_id, cpus=4, free=None, alive=True, hot=False, queued=0, **custom):
    """A NodeView of a node with cpus CPUs (free of them available) and custom resources."""
    total = to_units({"CPU": cpus, **custom})
    available = dict(total)
    if free is not None:
        available["CPU"] = to_units({"CPU": free})["CPU"]
    return NodeView(node_id, f"127.0.0.1:{abs(hash(node_id)) % 50000 + 1024}", total,
                    available, alive=alive, hot=hot, load={"queued": queued})


def choose(units, strategy, local, peers=(), arg_bytes=None, turn=0):
    return choose_node(units, strategy, local, list(peers), arg_bytes or {}, turn)


def affinity(node_id, soft=False):
    return encode_strategy(NodeAffinity(node_id, soft=soft))


def test_to_units_counts_ten_thousandths():
    assert to_units({"CPU": 1, "GPU": 0.5, "disk": 2}) == {"CPU": 10_000, "GPU": 5_000,
                                                           "disk": 20_000}
    assert ONE_CPU == {"CPU": 10_000}


# ------------------------------------------------------------- NodeAffinity

def test_affinity_to_a_live_full_node_returns_it_so_the_task_waits_there():
    local = node("local")
    full = node("b", cpus=2, free=0)
    assert choose(ONE_CPU, affinity("b"), local, [full]) == ("b", None)
    assert choose(ONE_CPU, affinity("b", soft=True), local, [full]) == ("b", None)


def test_affinity_to_the_local_node_returns_it_even_when_full():
    local = node("local", cpus=1, free=0)
    assert choose(ONE_CPU, affinity("local"), local, [node("b")]) == ("local", None)


def test_hard_affinity_to_an_unknown_node_fails_naming_the_node():
    node_id, reason = choose(ONE_CPU, affinity("feedfacecafebeef"), node("local"), [node("b")])
    assert node_id is None
    assert "feedfacecafebeef" in reason


def test_hard_affinity_to_a_dead_node_fails_naming_the_node():
    dead = node("b", alive=False)
    node_id, reason = choose(ONE_CPU, affinity("b"), node("local"), [dead])
    assert node_id is None
    assert "b" in reason and "dead" in reason


def test_soft_affinity_to_a_dead_node_falls_back_to_the_default_policy():
    local = node("local", cpus=4, free=0)          # full: DEFAULT picks the live peer
    dead = node("b", alive=False)
    live = node("c")
    expected = choose(ONE_CPU, None, local, [dead, live])
    assert expected == ("c", None)
    assert choose(ONE_CPU, affinity("b", soft=True), local, [dead, live]) == expected


def test_soft_affinity_to_an_unknown_node_falls_back_to_the_default_policy():
    local = node("local")
    assert choose(ONE_CPU, affinity("nosuchnode", soft=True), local, [node("c")]) == \
        choose(ONE_CPU, None, local, [node("c")]) == ("local", None)


def test_hard_affinity_to_a_node_that_can_never_fit_fails():
    small = node("b", cpus=1)
    node_id, reason = choose(TWO_CPUS, affinity("b"), node("local", cpus=4), [small])
    assert node_id is None
    assert "b" in reason and "never fit" in reason and "CPU" in reason


def test_soft_affinity_to_a_node_that_can_never_fit_falls_back_to_the_default_policy():
    small = node("b", cpus=1)
    local = node("local", cpus=4)
    assert choose(TWO_CPUS, affinity("b", soft=True), local, [small]) == ("local", None)


# ------------------------------------------------------------------ SPREAD

def test_spread_round_robins_over_fitting_nodes_by_turn():
    local, a, b = node("local"), node("a"), node("b")
    # Peers are ordered by node id, after the local node.
    chosen = [choose(ONE_CPU, "SPREAD", local, [b, a], turn=t)[0] for t in range(6)]
    assert chosen == ["local", "a", "b", "local", "a", "b"]


def test_spread_passes_the_turn_of_a_node_without_room_to_the_next_one():
    local, full, b = node("local"), node("a", free=0), node("b")
    chosen = [choose(ONE_CPU, "SPREAD", local, [full, b], turn=t)[0] for t in range(6)]
    assert chosen == ["local", "b", "b", "local", "b", "b"]


def test_spread_round_robins_over_feasible_nodes_when_none_fits_now():
    local = node("local", cpus=2, free=0)
    a = node("a", cpus=2, free=0)
    too_small = node("b", cpus=1, free=1)     # has room for 1 CPU, never for 2
    chosen = [choose(TWO_CPUS, "SPREAD", local, [a, too_small], turn=t)[0] for t in range(4)]
    assert chosen == ["local", "a", "local", "a"]


def test_spread_never_picks_a_dead_peer():
    local, dead, b = node("local"), node("a", alive=False), node("b")
    chosen = {choose(ONE_CPU, "SPREAD", local, [dead, b], turn=t)[0] for t in range(10)}
    assert chosen == {"local", "b"}


# ----------------------------------------------------------------- DEFAULT

def test_default_packs_the_local_node_while_it_stays_at_most_half_used():
    local = node("local", cpus=4, free=3)      # 1 of 4 used: half used after this task
    assert choose(ONE_CPU, None, local, [node("a")]) == ("local", None)
    assert choose(ONE_CPU, "DEFAULT", local, [node("a")]) == ("local", None)


def test_default_packs_nodes_in_order_past_a_local_node_over_half_used():
    local = node("local", cpus=4, free=2)      # 3 of 4 used after this task
    a = node("a", cpus=4, free=3)              # half used after it: still packed
    b = node("b", cpus=4)                      # empty, but later in the order
    assert choose(ONE_CPU, None, local, [b, a]) == ("a", None)


def test_default_picks_the_least_used_node_once_every_node_is_over_half_used():
    local = node("local", cpus=4, free=1)      # full after this task
    a = node("a", cpus=4, free=1)
    b = node("b", cpus=4, free=2)              # 3/4 used after it: the least
    assert choose(ONE_CPU, None, local, [a, b]) == ("b", None)


def test_default_prefers_the_local_node_among_equally_used_ones():
    local = node("local", cpus=4, free=1)
    a = node("a", cpus=4, free=1)
    assert choose(ONE_CPU, None, local, [a]) == ("local", None)


def test_default_waits_on_the_local_node_when_nothing_fits_now():
    local = node("local", cpus=1, free=0)
    a = node("a", cpus=1, free=0)
    assert choose(ONE_CPU, None, local, [a]) == ("local", None)


def test_default_queues_on_the_least_busy_peer_when_the_local_node_can_never_fit():
    local = node("local", cpus=1)
    a = node("a", cpus=4, free=0, queued=7)
    b = node("b", cpus=4, free=0, queued=2)
    assert choose(TWO_CPUS, None, local, [a, b]) == ("b", None)


# ---------------------------------------------------------------- locality

def test_the_node_holding_the_most_argument_bytes_wins_when_the_task_fits_there():
    local = node("local")                       # empty: packing alone would pick it
    a, b = node("a"), node("b", free=3)
    arg_bytes = {"local": 10, "a": 1_000, "b": 5_000_000}
    assert choose(ONE_CPU, None, local, [a, b], arg_bytes) == ("b", None)


def test_locality_is_ignored_when_the_task_does_not_fit_on_the_holder():
    local = node("local")
    b = node("b", free=0)                       # holds the arguments but is full
    assert choose(ONE_CPU, None, local, [b], {"b": 5_000_000, "local": 1}) == ("local", None)


def test_locality_is_ignored_when_the_holder_can_never_fit_the_task():
    local = node("local")
    b = node("b", cpus=1)
    assert choose(TWO_CPUS, None, local, [b], {"b": 5_000_000}) == ("local", None)


def test_locality_never_picks_a_dead_holder():
    local = node("local")
    dead = node("b", alive=False)
    assert choose(ONE_CPU, None, local, [dead], {"b": 5_000_000}) == ("local", None)


# -------------------------------------------------------------- hot nodes

def test_a_hot_local_node_gets_nothing_while_a_cool_peer_fits():
    local = node("local", hot=True)
    assert choose(ONE_CPU, None, local, [node("a")]) == ("a", None)


def test_a_hot_peer_gets_nothing_while_a_cool_node_fits_even_holding_the_arguments():
    local = node("local", cpus=4, free=1)       # cool, over half used after the task
    hot = node("a", hot=True)                   # empty: least used, but hot
    assert choose(ONE_CPU, None, local, [hot], {"a": 5_000_000}) == ("local", None)


def test_a_task_waits_on_a_cool_full_local_node_rather_than_go_to_a_hot_one():
    local = node("local", cpus=2, free=0)       # cool but full
    hot = node("a", hot=True)                   # room, but hot
    assert choose(ONE_CPU, None, local, [hot]) == ("local", None)


def test_a_hot_local_node_sends_the_task_to_wait_on_a_cool_full_peer():
    local = node("local", hot=True)             # room, but hot
    cool_full = node("a", cpus=2, free=0)
    assert choose(ONE_CPU, None, local, [cool_full]) == ("a", None)


def test_spread_puts_hot_nodes_last():
    local, hot, b = node("local"), node("a", hot=True), node("b")
    chosen = {choose(ONE_CPU, "SPREAD", local, [hot, b], turn=t)[0] for t in range(10)}
    assert chosen == {"local", "b"}


def test_a_hot_node_is_used_when_every_feasible_node_is_hot():
    local = node("local", hot=True)
    a = node("a", hot=True, free=0)
    never = node("b", cpus=1)                   # cool, but can never fit 2 CPUs
    assert choose(TWO_CPUS, None, local, [a, never]) == ("local", None)
    assert choose(TWO_CPUS, None, node("local", cpus=1), [a, never]) == ("a", None)
    chosen = {choose(ONE_CPU, "SPREAD", local, [node("a", hot=True)], turn=t)[0]
              for t in range(4)}
    assert chosen == {"local", "a"}


def test_affinity_ignores_heat():
    local = node("local")
    hot = node("a", hot=True)
    assert choose(ONE_CPU, affinity("a"), local, [hot]) == ("a", None)


# ------------------------------------------------------- unschedulable, dead

def test_a_request_no_node_can_ever_fit_fails_naming_the_resource():
    node_id, reason = choose(to_units({"CPU": 1, "GPU": 1}), None, node("local"), [node("a")])
    assert node_id is None
    assert "GPU" in reason


def test_a_custom_resource_no_node_has_fails_naming_it():
    node_id, reason = choose(to_units({"disk": 1}), "SPREAD", node("local"),
                             [node("a", disk=0.5)])
    assert node_id is None
    assert "disk" in reason


def test_a_custom_resource_sends_the_task_to_the_node_having_it():
    local = node("local")
    disk = node("b", disk=2)
    assert choose(to_units({"CPU": 1, "disk": 1}), None, local, [node("a"), disk]) == \
        ("b", None)


def test_a_request_only_a_dead_peer_could_fit_is_unschedulable():
    local = node("local", cpus=1)
    dead = node("a", cpus=8, alive=False)
    node_id, reason = choose(TWO_CPUS, None, local, [dead])
    assert node_id is None and "CPU" in reason


def test_dead_peers_are_never_chosen():
    local = node("local", cpus=1, free=0)       # full: the task would rather go elsewhere
    dead = node("a", cpus=8, alive=False)
    for strategy in (None, "SPREAD"):
        for turn in range(5):
            assert choose(ONE_CPU, strategy, local, [dead], {"a": 1 << 30}, turn=turn) == \
                ("local", None)


# ------------------------------------------------------------------ is_hot

def test_is_hot_when_memory_use_is_above_the_threshold():
    assert is_hot(0.81, 0.8, 0, 1000)
    assert not is_hot(0.8, 0.8, 0, 1000)
    assert not is_hot(0.5, 0.8, 0, 1000)
    assert is_hot(0.01, 0.0, 0, 0)


def test_is_hot_when_the_store_is_over_90_percent_full():
    assert is_hot(0.1, 0.8, 901, 1000)
    assert not is_hot(0.1, 0.8, 900, 1000)
    assert not is_hot(0.1, 0.8, 0, 0)          # no store: never hot for it


# -------------------------------------------------------------- NodeAffinity

@pytest.mark.parametrize("bad_id", [123, None, b"abc", ""])
def test_node_affinity_needs_a_node_id_string(bad_id):
    with pytest.raises(TypeError, match="node id"):
        NodeAffinity(bad_id)


@pytest.mark.parametrize("bad_soft", [1, 0, "yes", None])
def test_node_affinity_soft_must_be_a_bool(bad_soft):
    with pytest.raises(TypeError, match="soft"):
        NodeAffinity("abcd", soft=bad_soft)


def test_node_affinity_compares_and_hashes_by_value():
    assert NodeAffinity("abcd") == NodeAffinity("abcd", soft=False)
    assert NodeAffinity("abcd") != NodeAffinity("abcd", soft=True)
    assert len({NodeAffinity("abcd"), NodeAffinity("abcd")}) == 1
    assert lightray.NodeAffinity is NodeAffinity


# ----------------------------------------------------------- encode_strategy

def test_encode_strategy():
    assert encode_strategy(None) is None
    assert encode_strategy("DEFAULT") is None
    assert encode_strategy("SPREAD") == "SPREAD"
    assert encode_strategy(NodeAffinity("abcd")) == ("node", "abcd", False)
    assert encode_strategy(NodeAffinity("abcd", soft=True)) == ("node", "abcd", True)


@pytest.mark.parametrize("bad", ["BOGUS", "spread", "", ("node", "abcd", False), 3])
def test_encode_strategy_rejects_unknown_strategies(bad):
    with pytest.raises(ValueError, match="scheduling_strategy"):
        encode_strategy(bad)


# ------------------------------------------- strategies given to @remote / .options

def test_a_bogus_strategy_fails_at_decoration_without_a_runtime():
    with pytest.raises(ValueError, match="BOGUS"):
        @lightray.remote(scheduling_strategy="BOGUS")
        def f():
            return 1
    assert not lightray.is_initialized()


def test_a_bogus_strategy_fails_at_options_without_a_runtime():
    @lightray.remote
    def f():
        return 1

    with pytest.raises(ValueError, match="BOGUS"):
        f.options(scheduling_strategy="BOGUS")
    assert f.options(scheduling_strategy="SPREAD") is not None
    assert f.options(scheduling_strategy=NodeAffinity("abcd", soft=True)) is not None
    assert not lightray.is_initialized()


def test_a_bogus_actor_strategy_fails_before_any_runtime_starts():
    with pytest.raises(ValueError, match="BOGUS"):
        @lightray.remote(scheduling_strategy="BOGUS")
        class A:
            pass
    assert not lightray.is_initialized()
