from __future__ import annotations

import random

import pytest

from domain.inventory import LockResult, ReserveResult, SeatMap, SeatStatus, Summary

SEATS = ("seat_A1", "seat_A2", "seat_A3", "seat_A4", "seat_B1", "seat_B2")
TTL = 300.0
T0 = 1_000.0


def new_map(seat_ids: tuple[str, ...] = SEATS) -> SeatMap:
    return SeatMap(seat_ids)


# -- locking ------------------------------------------------------------------------------------


def test_lock_holds_every_seat_until_the_expiry() -> None:
    seat_map = new_map()
    result = seat_map.lock("b1", ("seat_A1", "seat_A2"), ttl=TTL, now=T0)
    assert result == LockResult(ok=True, expires_at=T0 + TTL)
    assert seat_map.lock_of("b1") == (("seat_A1", "seat_A2"), T0 + TTL)
    statuses = seat_map.statuses(T0 + 1)
    assert statuses["seat_A1"] is SeatStatus.LOCKED
    assert statuses["seat_A2"] is SeatStatus.LOCKED
    assert all(statuses[s] is SeatStatus.AVAILABLE for s in SEATS[2:])
    assert seat_map.holds_anything()


def test_one_taken_seat_fails_the_whole_lock_and_locks_none_of_the_others() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A2",), ttl=TTL, now=T0).ok

    result = seat_map.lock("b2", ("seat_A1", "seat_A2", "seat_A3"), ttl=TTL, now=T0 + 1)

    assert not result.ok
    assert result.conflicts == ("seat_A2",)
    assert result.unknown == ()
    assert seat_map.lock_of("b2") is None
    assert seat_map.status_of("seat_A1") is SeatStatus.AVAILABLE
    assert seat_map.status_of("seat_A3") is SeatStatus.AVAILABLE
    assert seat_map.lock_of("b1") == (("seat_A2",), T0 + TTL)


def test_conflicts_name_every_taken_seat_locked_or_sold() -> None:
    seat_map = new_map()
    assert seat_map.lock("sold", ("seat_A1",), ttl=TTL, now=T0).ok
    assert seat_map.begin_reserve("sold", now=T0).ok
    seat_map.settle_reserve("sold")
    assert seat_map.lock("locked", ("seat_A3",), ttl=TTL, now=T0).ok

    result = seat_map.lock("b", ("seat_A1", "seat_A2", "seat_A3", "seat_A4"), ttl=TTL, now=T0)

    assert not result.ok
    assert result.conflicts == ("seat_A1", "seat_A3")
    assert seat_map.status_of("seat_A2") is SeatStatus.AVAILABLE
    assert seat_map.status_of("seat_A4") is SeatStatus.AVAILABLE


def test_unknown_seats_are_reported_and_nothing_is_locked() -> None:
    seat_map = new_map()
    result = seat_map.lock("b1", ("seat_A1", "seat_Z9", "seat_ZZ1"), ttl=TTL, now=T0)
    assert not result.ok
    assert result.unknown == ("seat_Z9", "seat_ZZ1")
    assert result.conflicts == ()
    assert seat_map.lock_of("b1") is None
    assert seat_map.status_of("seat_A1") is SeatStatus.AVAILABLE


def test_relocking_the_same_seats_for_the_same_booking_keeps_the_first_expiry() -> None:
    seat_map = new_map()
    first = seat_map.lock("b1", ("seat_A1", "seat_A2"), ttl=TTL, now=T0)
    again = seat_map.lock("b1", ("seat_A2", "seat_A1"), ttl=TTL, now=T0 + 100)
    assert again.ok
    assert again.expires_at == first.expires_at == T0 + TTL
    assert seat_map.lock_of("b1") == (("seat_A1", "seat_A2"), T0 + TTL)
    # Not extended: it still lapses at the first expiry.
    assert seat_map.expire(T0 + TTL) == ["b1"]


def test_a_different_seat_set_for_the_same_booking_fails_and_keeps_the_first_lock() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1", "seat_A2"), ttl=TTL, now=T0).ok

    result = seat_map.lock("b1", ("seat_A1", "seat_A3"), ttl=TTL, now=T0 + 1)

    assert not result.ok
    assert result.conflicts == ("seat_A3",)
    assert seat_map.lock_of("b1") == (("seat_A1", "seat_A2"), T0 + TTL)
    assert seat_map.status_of("seat_A3") is SeatStatus.AVAILABLE


@pytest.mark.parametrize("ttl", [0.0, -1.0])
def test_a_lock_without_time_to_live_is_refused(ttl: float) -> None:
    seat_map = new_map()
    result = seat_map.lock("b1", ("seat_A1",), ttl=ttl, now=T0)
    assert not result.ok
    assert seat_map.lock_of("b1") is None
    assert seat_map.status_of("seat_A1") is SeatStatus.AVAILABLE


# -- expiry -------------------------------------------------------------------------------------


def test_expire_frees_lapsed_locks_only() -> None:
    seat_map = new_map()
    assert seat_map.lock("early", ("seat_A1",), ttl=10, now=T0).ok
    assert seat_map.lock("late", ("seat_A2",), ttl=20, now=T0).ok

    assert seat_map.expire(T0 + 9.999) == []
    assert seat_map.expire(T0 + 10) == ["early"]  # expiry is inclusive

    assert seat_map.lock_of("early") is None
    assert seat_map.status_of("seat_A1") is SeatStatus.AVAILABLE
    assert seat_map.status_of("seat_A2") is SeatStatus.LOCKED
    assert seat_map.expire(T0 + 10) == []  # nothing lapses twice
    assert seat_map.expire(T0 + 30) == ["late"]
    assert not seat_map.holds_anything()


def test_an_expired_lock_is_freed_when_another_booking_locks() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1", "seat_A2"), ttl=10, now=T0).ok
    result = seat_map.lock("b2", ("seat_A2",), ttl=TTL, now=T0 + 10)
    assert result.ok
    assert seat_map.lock_of("b1") is None
    assert seat_map.status_of("seat_A1") is SeatStatus.AVAILABLE


def test_an_expired_lock_may_be_taken_again_by_its_own_booking_with_a_new_expiry() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1",), ttl=10, now=T0).ok
    result = seat_map.lock("b1", ("seat_A1",), ttl=10, now=T0 + 50)
    assert result == LockResult(ok=True, expires_at=T0 + 60)
    # The stale heap entry of the first lock does not free the second one early.
    assert seat_map.expire(T0 + 59) == []
    assert seat_map.status_of("seat_A1") is SeatStatus.LOCKED


def test_the_old_expiry_of_a_released_lock_does_not_free_the_bookings_new_lock() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1",), ttl=10, now=T0).ok
    assert seat_map.release("b1") == ("seat_A1",)
    assert seat_map.lock("b1", ("seat_A1",), ttl=10, now=T0 + 5).ok  # expires at T0 + 15

    assert seat_map.expire(T0 + 10) == []
    assert seat_map.lock_of("b1") == (("seat_A1",), T0 + 15)
    assert seat_map.expire(T0 + 15) == ["b1"]


def test_summary_and_statuses_see_expired_locks_as_available() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1", "seat_A2"), ttl=10, now=T0).ok
    assert seat_map.summary(T0 + 5) == Summary(total=6, available=4, locked=2, reserved=0)
    assert seat_map.summary(T0 + 10) == Summary(total=6, available=6, locked=0, reserved=0)
    assert seat_map.lock_of("b1") is None

    assert seat_map.lock("b2", ("seat_B1",), ttl=10, now=T0 + 20).ok
    statuses = seat_map.statuses(T0 + 31)
    assert set(statuses) == set(SEATS)
    assert all(status is SeatStatus.AVAILABLE for status in statuses.values())
    assert seat_map.lock_of("b2") is None


# -- reserving (two-phase) ----------------------------------------------------------------------


def test_reserve_of_a_booking_without_a_lock_is_not_locked() -> None:
    seat_map = new_map()
    assert seat_map.begin_reserve("nobody", now=T0) == ReserveResult(ok=False, reason="NOT_LOCKED")
    assert seat_map.settle_reserve("nobody") == ()
    assert seat_map.summary(T0).reserved == 0


def test_only_the_lock_owner_can_reserve_the_seats() -> None:
    seat_map = new_map()
    assert seat_map.lock("owner", ("seat_A1",), ttl=TTL, now=T0).ok
    assert seat_map.begin_reserve("intruder", now=T0 + 1).reason == "NOT_LOCKED"
    assert seat_map.status_of("seat_A1") is SeatStatus.LOCKED
    assert seat_map.lock_of("owner") == (("seat_A1",), T0 + TTL)


def test_reserve_after_the_expiry_fails_and_frees_the_seats() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1", "seat_A2"), ttl=10, now=T0).ok

    result = seat_map.begin_reserve("b1", now=T0 + 10)

    assert result == ReserveResult(ok=False, reason="LOCK_EXPIRED")
    assert seat_map.lock_of("b1") is None
    assert seat_map.status_of("seat_A1") is SeatStatus.AVAILABLE
    assert seat_map.status_of("seat_A2") is SeatStatus.AVAILABLE
    assert seat_map.lock("b2", ("seat_A1", "seat_A2"), ttl=TTL, now=T0 + 10).ok


def test_begin_then_settle_makes_the_seats_reserved() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1", "seat_A2"), ttl=TTL, now=T0).ok

    begun = seat_map.begin_reserve("b1", now=T0 + 1)
    assert begun == ReserveResult(ok=True, seat_ids=("seat_A1", "seat_A2"))
    # While the sale is written the seats stay held by the lock.
    assert seat_map.status_of("seat_A1") is SeatStatus.LOCKED

    assert seat_map.settle_reserve("b1") == ("seat_A1", "seat_A2")
    assert seat_map.status_of("seat_A1") is SeatStatus.RESERVED
    assert seat_map.status_of("seat_A2") is SeatStatus.RESERVED
    assert seat_map.lock_of("b1") is None
    assert not seat_map.holds_anything()
    assert seat_map.summary(T0 + 1) == Summary(total=6, available=4, locked=0, reserved=2)
    # A sold seat never lapses and cannot be locked.
    assert seat_map.expire(T0 + 10 * TTL) == []
    assert seat_map.lock("b2", ("seat_A1",), ttl=TTL, now=T0 + 10 * TTL).conflicts == ("seat_A1",)


def test_a_lock_being_reserved_outlives_its_expiry_until_settled() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1",), ttl=10, now=T0).ok
    assert seat_map.begin_reserve("b1", now=T0 + 9).ok

    assert seat_map.expire(T0 + 100) == []
    assert seat_map.summary(T0 + 100).locked == 1
    assert not seat_map.lock("b2", ("seat_A1",), ttl=TTL, now=T0 + 100).ok
    # A repeated begin (a retried call) is still allowed: the sale is in progress.
    assert seat_map.begin_reserve("b1", now=T0 + 100).ok

    assert seat_map.settle_reserve("b1") == ("seat_A1",)
    assert seat_map.status_of("seat_A1") is SeatStatus.RESERVED


def test_abort_keeps_the_lock_with_its_original_expiry_so_it_lapses_later() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1",), ttl=10, now=T0).ok
    assert seat_map.begin_reserve("b1", now=T0 + 5).ok
    assert seat_map.expire(T0 + 20) == []  # skipped while reserving

    seat_map.abort_reserve("b1")

    assert seat_map.lock_of("b1") == (("seat_A1",), T0 + 10)
    assert seat_map.status_of("seat_A1") is SeatStatus.LOCKED
    assert seat_map.expire(T0 + 21) == ["b1"]
    assert seat_map.status_of("seat_A1") is SeatStatus.AVAILABLE


def test_abort_before_the_expiry_leaves_a_live_lock_that_can_be_reserved_again() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1",), ttl=10, now=T0).ok
    assert seat_map.begin_reserve("b1", now=T0 + 1).ok
    seat_map.abort_reserve("b1")
    assert seat_map.expire(T0 + 5) == []
    assert seat_map.begin_reserve("b1", now=T0 + 5).ok
    assert seat_map.settle_reserve("b1") == ("seat_A1",)
    # After an abort the lock is a plain lock again: past its expiry a begin fails.
    assert seat_map.lock("b2", ("seat_A2",), ttl=10, now=T0).ok
    assert seat_map.begin_reserve("b2", now=T0 + 1).ok
    seat_map.abort_reserve("b2")
    assert seat_map.begin_reserve("b2", now=T0 + 10).reason == "LOCK_EXPIRED"
    assert seat_map.status_of("seat_A2") is SeatStatus.AVAILABLE


def test_abort_of_an_unknown_booking_is_harmless() -> None:
    seat_map = new_map()
    seat_map.abort_reserve("nobody")
    assert seat_map.summary(T0) == Summary(total=6, available=6, locked=0, reserved=0)


def test_settle_and_begin_after_settle_are_idempotent() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1", "seat_A2"), ttl=10, now=T0).ok
    assert seat_map.begin_reserve("b1", now=T0).ok
    assert seat_map.settle_reserve("b1") == ("seat_A1", "seat_A2")

    assert seat_map.settle_reserve("b1") == ("seat_A1", "seat_A2")
    # Even long after the lock's expiry: the seats are sold to this booking.
    assert seat_map.begin_reserve("b1", now=T0 + 1_000) == ReserveResult(
        ok=True, seat_ids=("seat_A1", "seat_A2")
    )
    assert seat_map.lock("b1", ("seat_A2", "seat_A1"), ttl=TTL, now=T0 + 1_000).ok
    assert seat_map.lock_of("b1") is None  # a retried lock of sold seats holds nothing more
    assert seat_map.summary(T0 + 1_000) == Summary(total=6, available=4, locked=0, reserved=2)


# -- releasing and unreserving ------------------------------------------------------------------


def test_release_frees_the_booking_lock_and_is_repeatable() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1", "seat_A2"), ttl=TTL, now=T0).ok
    assert seat_map.lock("b2", ("seat_A3",), ttl=TTL, now=T0).ok

    assert seat_map.release("b1") == ("seat_A1", "seat_A2")
    assert seat_map.release("b1") == ()

    assert seat_map.status_of("seat_A1") is SeatStatus.AVAILABLE
    assert seat_map.lock_of("b2") == (("seat_A3",), T0 + TTL)
    assert seat_map.status_of("seat_A3") is SeatStatus.LOCKED


def test_a_late_release_after_expiry_and_relock_leaves_the_new_lock_intact() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1", "seat_A2"), ttl=10, now=T0).ok
    assert seat_map.lock("b2", ("seat_A2", "seat_A3"), ttl=TTL, now=T0 + 10).ok

    assert seat_map.release("b1") == ()

    assert seat_map.lock_of("b2") == (("seat_A2", "seat_A3"), T0 + 10 + TTL)
    assert seat_map.status_of("seat_A2") is SeatStatus.LOCKED
    assert seat_map.status_of("seat_A3") is SeatStatus.LOCKED
    assert seat_map.begin_reserve("b2", now=T0 + 11).ok


def test_release_does_not_touch_sold_seats() -> None:
    seat_map = new_map()
    assert seat_map.lock("b1", ("seat_A1",), ttl=TTL, now=T0).ok
    assert seat_map.begin_reserve("b1", now=T0).ok
    seat_map.settle_reserve("b1")
    assert seat_map.release("b1") == ()
    assert seat_map.status_of("seat_A1") is SeatStatus.RESERVED


def test_unreserve_frees_only_that_bookings_sold_seats() -> None:
    seat_map = new_map()
    for booking, seats in (("b1", ("seat_A1", "seat_A2")), ("b2", ("seat_A3",))):
        assert seat_map.lock(booking, seats, ttl=TTL, now=T0).ok
        assert seat_map.begin_reserve(booking, now=T0).ok
        seat_map.settle_reserve(booking)
    assert seat_map.lock("b3", ("seat_A4",), ttl=TTL, now=T0).ok

    assert seat_map.unreserve("b1") == ("seat_A1", "seat_A2")
    assert seat_map.unreserve("b1") == ()
    assert seat_map.unreserve("never-sold") == ()

    assert seat_map.status_of("seat_A1") is SeatStatus.AVAILABLE
    assert seat_map.status_of("seat_A2") is SeatStatus.AVAILABLE
    assert seat_map.status_of("seat_A3") is SeatStatus.RESERVED
    assert seat_map.status_of("seat_A4") is SeatStatus.LOCKED
    assert seat_map.begin_reserve("b1", now=T0).reason == "NOT_LOCKED"
    assert seat_map.lock("b4", ("seat_A1", "seat_A2"), ttl=TTL, now=T0).ok


def test_unreserve_never_frees_a_seat_restored_as_sold_to_another_booking() -> None:
    seat_map = new_map()
    seat_map.restore_reserved("seat_A1", "old")
    seat_map.restore_reserved("seat_A1", "new")  # the last restored sale of a seat wins
    assert seat_map.unreserve("old") == ("seat_A1",)
    assert seat_map.status_of("seat_A1") is SeatStatus.RESERVED
    assert seat_map.unreserve("new") == ("seat_A1",)
    assert seat_map.status_of("seat_A1") is SeatStatus.AVAILABLE


# -- restoring ----------------------------------------------------------------------------------


def test_restore_reserved_marks_sales_and_ignores_unknown_seats() -> None:
    seat_map = new_map()
    seat_map.restore_reserved("seat_A1", "b1")
    seat_map.restore_reserved("seat_A2", "b1")
    seat_map.restore_reserved("seat_Q7", "b1")  # a seat this map does not have
    seat_map.restore_reserved("seat_B1", "b2")

    assert seat_map.summary(T0) == Summary(total=6, available=3, locked=0, reserved=3)
    assert seat_map.begin_reserve("b1", now=T0) == ReserveResult(
        ok=True, seat_ids=("seat_A1", "seat_A2")
    )
    assert seat_map.unreserve("b1") == ("seat_A1", "seat_A2")
    assert seat_map.status_of("seat_B1") is SeatStatus.RESERVED
    assert not seat_map.lock("b3", ("seat_B1",), ttl=TTL, now=T0).ok


def test_restore_lock_reapplies_a_live_lock_with_its_persisted_expiry() -> None:
    seat_map = new_map()
    assert seat_map.restore_lock("b1", ["seat_A1", "seat_A2"], expires_at=T0 + 42, now=T0)
    assert seat_map.lock_of("b1") == (("seat_A1", "seat_A2"), T0 + 42)
    assert seat_map.expire(T0 + 42) == ["b1"]


def test_restore_lock_refuses_an_expired_or_colliding_lock() -> None:
    seat_map = new_map()
    assert not seat_map.restore_lock("expired", ["seat_A1"], expires_at=T0, now=T0)
    assert not seat_map.restore_lock("expired", ["seat_A1"], expires_at=T0 - 5, now=T0)
    assert seat_map.lock_of("expired") is None

    seat_map.restore_reserved("seat_A2", "sold")
    assert not seat_map.restore_lock("collides", ["seat_A2", "seat_A3"], expires_at=T0 + 60, now=T0)
    assert seat_map.status_of("seat_A3") is SeatStatus.AVAILABLE


def test_restore_lock_of_a_booking_whose_seats_are_already_sold_to_it_holds_nothing() -> None:
    seat_map = new_map()
    seat_map.restore_reserved("seat_A1", "b1")
    assert seat_map.restore_lock("b1", ["seat_A1"], expires_at=T0 + 60, now=T0)
    assert seat_map.lock_of("b1") is None
    assert seat_map.summary(T0) == Summary(total=6, available=5, locked=0, reserved=1)


# -- reading ------------------------------------------------------------------------------------


def test_summary_counts_each_status() -> None:
    seat_map = new_map()
    assert seat_map.summary(T0) == Summary(total=6, available=6, locked=0, reserved=0)
    assert seat_map.lock("b1", ("seat_A1", "seat_A2"), ttl=TTL, now=T0).ok
    assert seat_map.lock("b2", ("seat_A3", "seat_A4", "seat_B1"), ttl=TTL, now=T0).ok
    assert seat_map.begin_reserve("b2", now=T0).ok
    seat_map.settle_reserve("b2")
    assert seat_map.summary(T0) == Summary(total=6, available=1, locked=2, reserved=3)
    assert seat_map.statuses(T0) == {
        "seat_A1": SeatStatus.LOCKED,
        "seat_A2": SeatStatus.LOCKED,
        "seat_A3": SeatStatus.RESERVED,
        "seat_A4": SeatStatus.RESERVED,
        "seat_B1": SeatStatus.RESERVED,
        "seat_B2": SeatStatus.AVAILABLE,
    }
    assert list(seat_map.statuses(T0)) == list(SEATS)  # in seat map order


def test_seat_status_values_are_the_contract_strings() -> None:
    assert [s.value for s in SeatStatus] == ["AVAILABLE", "LOCKED", "RESERVED"]


# -- randomized invariants ----------------------------------------------------------------------


def check_invariants(seat_map: SeatMap, bookings: list[str], now: float) -> None:
    summary = seat_map.summary(now)
    statuses = seat_map.statuses(now)
    assert summary.total == len(SEATS)
    assert summary.available + summary.locked + summary.reserved == summary.total
    assert summary.available >= 0
    counted = {status: sum(1 for s in statuses.values() if s is status) for status in SeatStatus}
    assert counted == {
        SeatStatus.AVAILABLE: summary.available,
        SeatStatus.LOCKED: summary.locked,
        SeatStatus.RESERVED: summary.reserved,
    }
    locked_by: dict[str, str] = {}
    for booking in bookings:
        lock = seat_map.lock_of(booking)
        if lock is None:
            continue
        for seat in lock[0]:
            assert seat not in locked_by, f"{seat} locked by {locked_by.get(seat)} and {booking}"
            locked_by[seat] = booking
    for seat, status in statuses.items():
        # Never both LOCKED and RESERVED; a LOCKED seat has exactly one lock holding it.
        if status is SeatStatus.LOCKED:
            assert seat in locked_by
        elif status is SeatStatus.RESERVED:
            assert seat not in locked_by
        else:
            assert seat not in locked_by


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_random_operations_keep_the_seat_map_consistent(seed: int) -> None:
    rng = random.Random(seed)
    seat_map = new_map()
    bookings = [f"b{i}" for i in range(8)]
    sold: dict[str, frozenset[str]] = {}  # booking -> seats, as settle/unreserve report them
    writing: set[str] = (
        set()
    )  # bookings whose sale is being written (begun, not settled or aborted)
    now = T0
    for _ in range(3_000):
        now += rng.choice((0.0, 0.5, 1.0, 3.0, 7.0))
        booking = rng.choice(bookings)
        op = rng.randrange(7)
        if op in (0, 1):
            seats = tuple(rng.sample(SEATS, rng.randint(1, 3)))
            before = seat_map.statuses(now)
            result = seat_map.lock(booking, seats, ttl=rng.choice((2.0, 5.0, 20.0)), now=now)
            if result.ok:
                held = seat_map.lock_of(booking)
                assert (held is not None and set(held[0]) == set(seats)) or sold.get(
                    booking
                ) == set(seats)
            else:
                # All or none: a failed lock changes no seat.
                assert seat_map.statuses(now) == before
                assert set(result.conflicts) <= set(seats)
        elif op == 2:
            seat_map.release(booking)
            # A lock whose sale is being written is left to its reserve to settle or abort.
            assert seat_map.lock_of(booking) is None or booking in writing
        elif op == 3:
            begun = seat_map.begin_reserve(booking, now=now)
            if begun.ok and booking not in sold:
                if rng.random() < 0.3:
                    seat_map.abort_reserve(booking)
                    writing.discard(booking)
                else:
                    writing.add(booking)
        elif op == 4:
            begun = seat_map.begin_reserve(booking, now=now)
            if begun.ok:
                writing.discard(booking)
                settled = seat_map.settle_reserve(booking)
                assert set(settled) == set(begun.seat_ids)
                sold[booking] = frozenset(settled)
        elif op == 5:
            freed = seat_map.unreserve(booking)
            assert frozenset(freed) == sold.pop(booking, frozenset())
        else:
            seat_map.expire(now)

        # No seat is held by two bookings: sales are disjoint and each sold seat is RESERVED.
        sold_seats = [s for seats in sold.values() for s in seats]
        assert len(sold_seats) == len(set(sold_seats))
        for seat in sold_seats:
            assert seat_map.status_of(seat) is SeatStatus.RESERVED
        assert seat_map.summary(now).reserved == len(sold_seats)
        check_invariants(seat_map, bookings, now)


def test_release_during_a_sale_write_leaves_the_lock_to_the_reserve() -> None:
    seat_map = SeatMap(SEATS)
    assert seat_map.lock("bkg_w", ("seat_A1",), ttl=10.0, now=0.0).ok
    assert seat_map.begin_reserve("bkg_w", now=1.0).ok
    assert seat_map.release("bkg_w") == ()  # a late compensation must not free a seat being sold
    assert seat_map.status_of("seat_A1") is SeatStatus.LOCKED
    assert seat_map.settle_reserve("bkg_w") == ("seat_A1",)
    assert seat_map.status_of("seat_A1") is SeatStatus.RESERVED


def test_aborted_sale_write_can_be_released() -> None:
    seat_map = SeatMap(SEATS)
    assert seat_map.lock("bkg_a", ("seat_A2",), ttl=10.0, now=0.0).ok
    assert seat_map.begin_reserve("bkg_a", now=1.0).ok
    seat_map.abort_reserve("bkg_a")
    assert seat_map.release("bkg_a") == ("seat_A2",)
    assert seat_map.status_of("seat_A2") is SeatStatus.AVAILABLE
