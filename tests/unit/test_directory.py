"""Placement of seat actors within the per-node cap (the pure decision)."""

from __future__ import annotations

from actors.directory import (
    _Entry,
    choose_placement,
    free_node,
    recent_service_times,
    reported,
    silent_entries,
)


def entries(**spec: tuple[str, float, bool]) -> dict[str, _Entry]:
    return {
        event: _Entry(node, last_used, holds) for event, (node, last_used, holds) in spec.items()
    }


def test_the_emptiest_node_is_chosen() -> None:
    live = entries(e1=("n1", 1.0, False), e2=("n1", 2.0, False), e3=("n2", 3.0, False))
    placement = choose_placement(live, ["n1", "n2"], cap=5, now=10.0, protect="new")
    assert placement.node_id == "n2" and placement.retire == ()


def test_at_the_cap_the_least_recently_used_idle_actor_goes() -> None:
    live = entries(e1=("n1", 5.0, False), e2=("n1", 1.0, True), e3=("n1", 3.0, False))
    placement = choose_placement(live, ["n1"], cap=3, now=10.0, protect="new")
    assert placement.node_id == "n1"
    assert placement.retire == ("e3",)  # e2 is older but holds locks: never retired


def test_actors_holding_locks_are_kept_even_over_the_cap() -> None:
    live = entries(e1=("n1", 1.0, True), e2=("n1", 2.0, True))
    placement = choose_placement(live, ["n1"], cap=2, now=10.0, protect="new")
    assert placement.retire == ()


def test_the_event_being_placed_is_never_its_own_victim() -> None:
    live = entries(new=("n1", 1.0, False), e2=("n1", 2.0, False))
    placement = choose_placement(live, ["n1"], cap=2, now=10.0, protect="new")
    assert placement.retire == ("e2",)


def test_without_known_nodes_ray_chooses() -> None:
    assert choose_placement({}, [], cap=1, now=0.0, protect="x").node_id is None


def test_warming_takes_the_emptiest_node_below_the_cap() -> None:
    live = entries(e1=("n1", 1.0, False), e2=("n1", 2.0, False), e3=("n2", 3.0, False))
    assert free_node(live, ["n1", "n2"], cap=3) == "n2"


def test_warming_never_retires_anyone_when_every_node_is_full() -> None:
    live = entries(e1=("n1", 1.0, False), e2=("n2", 2.0, False))
    assert free_node(live, ["n1", "n2"], cap=1) is None
    assert free_node(live, [], cap=5) is None


def test_an_actor_not_heard_from_no_longer_counts_even_if_it_held_locks() -> None:
    live = {
        "reporting": _Entry("n1", 1.0, True, heard_at=95.0),
        "gone_with_its_node": _Entry("n1", 1.0, True, heard_at=30.0),
        "forget_lost": _Entry("n2", 1.0, False, heard_at=39.0),
    }
    assert silent_entries(live, now=100.0, silent=60.0) == ["gone_with_its_node", "forget_lost"]


def test_a_report_without_a_measurement_keeps_the_last_one() -> None:
    measured = reported(None, _Entry("n1", 1.0, False, heard_at=10.0), service_seconds=0.02)
    assert (measured.service_seconds, measured.measured_at) == (0.02, 10.0)
    kept = reported(measured, _Entry("n1", 2.0, True, heard_at=12.0), service_seconds=None)
    assert (kept.service_seconds, kept.measured_at, kept.holds_locks) == (0.02, 10.0, True)
    first = reported(None, _Entry("n1", 1.0, False, heard_at=5.0), service_seconds=None)
    assert first.service_seconds is None


def test_only_recent_service_times_are_handed_out() -> None:
    live = {
        "fresh": _Entry("n1", 1.0, True, heard_at=95.0, service_seconds=0.7, measured_at=95.0),
        "stale": _Entry("n1", 1.0, True, heard_at=99.0, service_seconds=0.9, measured_at=80.0),
        "never": _Entry("n2", 1.0, False, heard_at=99.0),
    }
    found = recent_service_times(live, ["fresh", "stale", "never", "gone"], now=100.0, fresh=15.0)
    assert found == {"fresh": 0.7}
