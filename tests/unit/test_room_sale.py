"""What the admitter paces a room against (storage.catalog_repository.RoomSale), without I/O."""

from __future__ import annotations

from domain.admission import AdmissionPacer
from storage.catalog_repository import RoomSale


def _sale(**counts: int) -> RoomSale:
    base = {"seats": 6, "sold": 0, "confirmed": 0, "locked": 0, "in_flight": 0, "recent_buyers": 0}
    return RoomSale(
        event_id="evnt_x", sales_start_at=None, admit_per_minute=60, **{**base, **counts}
    )


def _allowance(sale: RoomSale, holding: int) -> int:
    return AdmissionPacer(6000).allowance(
        elapsed_seconds=3600,
        admitted=holding,
        admitted_last_minute=0,
        seats_left=sale.seats_for_pacing,
        holding=holding,
    )


def test_buyers_whose_bookings_hold_seats_are_not_counted_twice() -> None:
    # Two admitted buyers bought two seats each: two seats are left, for one more buyer at least.
    sale = _sale(sold=4, confirmed=2, recent_buyers=2)
    assert sale.seats_left == 2 and sale.seats_for_pacing == 4
    assert _allowance(sale, holding=2) == 2


def test_an_admitted_buyer_without_seats_yet_still_holds_one() -> None:
    # One seat, its buyer admitted and booking (not locked yet): nobody else gets in.
    sale = _sale(seats=1, in_flight=1)
    assert _allowance(sale, holding=1) == 0
    locked = _sale(seats=1, locked=1, in_flight=1, recent_buyers=1)
    assert _allowance(locked, holding=1) == 0


def test_sold_out_means_every_seat_sold_not_merely_locked() -> None:
    assert _sale(seats=2, sold=2).sold_out
    assert not _sale(seats=2, sold=1, locked=1).sold_out
    assert _sale(seats=2, sold=1, locked=5).seats_left == 0
