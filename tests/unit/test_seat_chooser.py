"""Best available: the choosing of seats, against a brute-force oracle on small maps."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.best_available import SeatChooser, SeatRequest, choose_seats, unavailable_message
from domain.inventory import SeatMap
from domain.seating import Seat, TicketTier, generate_layout, row_label, seat_id

TTL = 300.0
T0 = 1_000.0


def row(
    label: str, numbers: list[int] | range, tier: str = "GENERAL", start: int = 0
) -> list[Seat]:
    return [Seat(seat_id(label, n), label, n, tier, start + i) for i, n in enumerate(numbers)]


def rows(*specs: tuple[str, int, str]) -> list[Seat]:
    seats: list[Seat] = []
    for label, count, tier in specs:
        seats += row(label, range(1, count + 1), tier, start=len(seats))
    return seats


def ids(*names: str) -> tuple[str, ...]:
    return tuple(f"seat_{n}" for n in names)


def all_but(seats: list[Seat], *taken: str) -> list[str]:
    gone = set(ids(*taken))
    return [s.id for s in seats if s.id not in gone]


# -- the oracle: every candidate, scored by the rules as docs/best-available.md states them ------


def _rank(seats: list[Seat]) -> dict[str, int]:
    first: dict[str, int] = {}
    for s in seats:
        first[s.row] = min(first.get(s.row, s.position), s.position)
    return {r: i for i, r in enumerate(sorted(first, key=lambda r: (first[r], r)))}


def _centre2(seats: list[Seat]) -> dict[str, int]:
    numbers: dict[str, list[int]] = {}
    for s in seats:
        numbers.setdefault(s.row, []).append(s.number)
    return {r: min(n) + max(n) for r, n in numbers.items()}


def _adjacent(a: Seat, b: Seat) -> bool:
    return a.row == b.row and a.tier == b.tier and abs(a.number - b.number) == 1


def isolated(seats: list[Seat], free: set[str]) -> set[str]:
    """Available seats with no available neighbour."""
    by_id = {s.id: s for s in seats}
    return {x for x in free if not any(_adjacent(by_id[x], s) for s in seats if s.id in free)}


def blocks(seats: list[Seat], free: set[str], quantity: int, tier: str | None) -> list[list[Seat]]:
    """Every run of `quantity` available, pairwise adjacent seats of the tier."""
    found = []
    for first in seats:
        block = [first]
        while len(block) < quantity:
            nxt = [s for s in seats if _adjacent(block[-1], s) and s.number == block[-1].number + 1]
            if not nxt:
                break
            block.append(nxt[0])
        if (
            len(block) == quantity
            and all(s.id in free for s in block)
            and (tier is None or all(s.tier == tier for s in block))
        ):
            found.append(block)
    return found


def created_singles(seats: list[Seat], free: set[str], chosen: set[str]) -> int:
    return len(isolated(seats, free - chosen) - isolated(seats, free))


@dataclass(frozen=True)
class Expected:
    seat_ids: tuple[str, ...] | None
    singles: int = 0


def oracle(seats: list[Seat], free: set[str], request: SeatRequest) -> Expected:
    rank, centre2 = _rank(seats), _centre2(seats)
    q = request.quantity
    if request.together:
        scored = []
        for block in blocks(seats, free, q, request.tier):
            start = block[0]
            singles = created_singles(seats, free, {s.id for s in block})
            key = (
                singles,
                rank[start.row],
                abs(2 * start.number + q - 1 - centre2[start.row]),
                start.number,
            )
            scored.append((key, tuple(s.id for s in block)))
        if not scored:
            return Expected(None)
        key, best = min(scored)
        return Expected(best, singles=key[0])
    candidates = sorted(
        (rank[s.row], abs(2 * s.number - centre2[s.row]), s.number, s.id)
        for s in seats
        if s.id in free and (request.tier is None or s.tier == request.tier)
    )
    if len(candidates) < q:
        return Expected(None)
    return Expected(tuple(c[3] for c in candidates[:q]))


# -- strategies: small maps with gaps in the numbering, rows of either tier ------------------------


@st.composite
def seat_maps(draw: st.DrawFn) -> tuple[list[Seat], set[str]]:
    seats: list[Seat] = []
    for r in range(draw(st.integers(1, 4))):
        numbers = sorted(draw(st.sets(st.integers(1, 9), min_size=1, max_size=9)))
        tier = draw(st.sampled_from(["VIP", "GENERAL"]))
        seats += row(row_label(r), numbers, tier, start=len(seats))
    free = {s.id for s in seats if draw(st.booleans()) or draw(st.booleans())}
    return seats, free


requests = st.builds(
    SeatRequest,
    quantity=st.integers(1, 6),
    tier=st.sampled_from([None, "VIP", "GENERAL"]),
    together=st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(seat_maps(), requests)
def test_choice_equals_the_brute_force_oracle(
    case: tuple[list[Seat], set[str]], request: SeatRequest
) -> None:
    seats, free = case
    choice = choose_seats(seats, free, request)
    expected = oracle(seats, free, request)
    assert choice.ok == (expected.seat_ids is not None)
    if expected.seat_ids is not None:
        assert choice.seat_ids == expected.seat_ids


@settings(max_examples=400, deadline=None)
@given(seat_maps(), requests)
def test_chosen_seats_keep_every_rule(
    case: tuple[list[Seat], set[str]], request: SeatRequest
) -> None:
    seats, free = case
    by_id = {s.id: s for s in seats}
    choice = choose_seats(seats, free, request)
    if not choice.ok:
        assert choice.seat_ids == ()
        wanted = [s for s in seats if s.id in free and request.tier in (None, s.tier)]
        if request.together:
            assert not blocks(seats, free, request.quantity, request.tier)
        else:
            assert len(wanted) < request.quantity
        largest = max((n for n in range(1, 10) if blocks(seats, free, n, request.tier)), default=0)
        assert (choice.largest_block, choice.available) == (largest, len(wanted))
        return
    chosen = [by_id[s] for s in choice.seat_ids]
    assert len(chosen) == request.quantity  # quantity honoured
    assert len(set(choice.seat_ids)) == len(chosen)  # no seat twice
    assert all(s.id in free for s in chosen)  # only available seats...
    assert all(request.tier in (None, s.tier) for s in chosen)  # ...of the tier
    if request.together:
        assert all(
            _adjacent(a, b) and b.number == a.number + 1
            for a, b in zip(chosen, chosen[1:], strict=False)
        )
        singles = created_singles(seats, free, set(choice.seat_ids))
        avoidable = any(
            created_singles(seats, free, {s.id for s in block}) == 0
            for block in blocks(seats, free, request.quantity, request.tier)
        )
        assert singles == 0 or not avoidable  # no single isolated seat where another choice exists


@settings(max_examples=200, deadline=None)
@given(seat_maps(), requests, st.randoms(use_true_random=False))
def test_the_choice_depends_on_the_map_only(
    case: tuple[list[Seat], set[str]],
    request: SeatRequest,
    rnd: random.Random,
) -> None:
    seats, free = case
    shuffled_seats, shuffled_free = list(seats), list(free)
    rnd.shuffle(shuffled_seats)
    rnd.shuffle(shuffled_free)
    first = choose_seats(seats, free, request)
    assert choose_seats(seats, free, request) == first
    assert choose_seats(shuffled_seats, shuffled_free, request) == first


@settings(max_examples=100, deadline=None)
@given(
    seat_maps(),
    st.lists(st.tuples(requests, st.integers(0, 9), st.booleans()), min_size=1, max_size=25),
)
def test_the_kept_index_agrees_with_a_fresh_choice_after_every_change(
    case: tuple[list[Seat], set[str]],
    steps: list[tuple[SeatRequest, int, bool]],
) -> None:
    """SeatMap keeps the chooser's free runs across locks, releases, sales and cancellations."""
    seats, _ = case
    seat_map = SeatMap(tuple(s.id for s in seats))
    seat_map.use_layout(seats)
    holders: list[str] = []
    for n, (request, pick, sell) in enumerate(steps):
        now = T0 + n
        free = {s for s, status in seat_map.statuses(now).items() if status == "AVAILABLE"}
        expected = choose_seats(seats, free, request)
        result = seat_map.choose_and_lock(f"b{n}", request, ttl=TTL, now=now)
        assert result.ok == expected.ok
        assert result.seat_ids == expected.seat_ids
        if result.ok:
            holders.append(f"b{n}")
        if holders and pick % 3 == 0:
            victim = holders.pop(pick % len(holders))
            if sell:  # sold, then cancelled
                assert seat_map.begin_reserve(victim, now=now).ok
                seat_map.settle_reserve(victim)
                seat_map.unreserve(victim)
            else:
                seat_map.release(victim)
        elif holders and sell:
            assert seat_map.begin_reserve(holders[-1], now=now).ok
            seat_map.settle_reserve(holders.pop())


@settings(max_examples=100, deadline=None)
@given(seat_maps(), st.lists(requests, min_size=1, max_size=20))
def test_choose_and_lock_never_gives_a_seat_to_two_bookings(
    case: tuple[list[Seat], set[str]],
    asks: list[SeatRequest],
) -> None:
    seats, _ = case
    seat_map = SeatMap(tuple(s.id for s in seats))
    seat_map.use_layout(seats)
    held: dict[str, str] = {}
    for n, request in enumerate(asks):
        result = seat_map.choose_and_lock(f"b{n}", request, ttl=TTL, now=T0)
        again = seat_map.choose_and_lock(f"b{n}", request, ttl=TTL, now=T0 + 1)
        assert again.seat_ids == result.seat_ids  # idempotent for its holder
        for s in result.seat_ids:
            assert s not in held
            held[s] = f"b{n}"
    assert seat_map.summary(T0).locked == len(held)


# -- the score, by example ---------------------------------------------------------------------


def test_a_free_row_gives_its_centre_and_ties_go_left() -> None:
    seats = rows(("A", 10, "GENERAL"))
    every = [s.id for s in seats]
    assert choose_seats(seats, every, SeatRequest(2)).seat_ids == ids("A5", "A6")
    # Centres at 5 and 6 are both half a seat from 5.5: the lower numbers win.
    assert choose_seats(seats, every, SeatRequest(3)).seat_ids == ids("A4", "A5", "A6")
    assert choose_seats(seats, every, SeatRequest(1)).seat_ids == ids("A5")


def test_front_comes_before_centre() -> None:
    seats = rows(("A", 10, "GENERAL"), ("B", 10, "GENERAL"))
    free = all_but(seats, "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9")
    # A1 and A10 are both free and alone: front row, equally off centre, the lower number wins.
    assert choose_seats(seats, free, SeatRequest(1)).seat_ids == ids("A1")
    assert choose_seats(seats, free, SeatRequest(2)).seat_ids == ids("B5", "B6")


def test_rows_are_ranked_by_layout_position_not_by_label() -> None:
    # An explicit map may list row C first: it is the front.
    seats = row("C", range(1, 7), start=0) + row("A", range(1, 7), start=6)
    assert choose_seats(seats, [s.id for s in seats], SeatRequest(2)).seat_ids == ids("C3", "C4")


def test_a_pair_in_a_row_of_four_goes_to_an_end_not_to_the_centre() -> None:
    # C2-C3 is centred but would leave C1 and C4 alone; C1-C2 leaves a pair.
    seats = row("C", range(1, 5))
    assert choose_seats(seats, [s.id for s in seats], SeatRequest(2)).seat_ids == ids("C1", "C2")


def test_a_block_that_would_isolate_a_seat_gives_way_to_one_further_back() -> None:
    seats = rows(("A", 10, "GENERAL"), ("B", 10, "GENERAL"))
    # Row A has only A1-A4 free: three of them leave one seat alone; B has room.
    free = all_but(seats, "A5", "A6", "A7", "A8", "A9", "A10")
    assert choose_seats(seats, free, SeatRequest(3)).seat_ids == ids("B4", "B5", "B6")
    # Four fill A1-A4 exactly; two take A1-A2 or A3-A4 (the one nearer the centre).
    assert choose_seats(seats, free, SeatRequest(4)).seat_ids == ids("A1", "A2", "A3", "A4")
    assert choose_seats(seats, free, SeatRequest(2)).seat_ids == ids("A3", "A4")


def test_a_block_may_isolate_a_seat_when_nothing_else_fits() -> None:
    seats = rows(("A", 4, "GENERAL"), ("B", 4, "GENERAL"))
    free = all_but(seats, "B1", "B2", "B3", "B4")
    assert choose_seats(seats, free, SeatRequest(3)).seat_ids == ids("A1", "A2", "A3")


def test_a_single_seat_is_not_taken_out_of_a_pair_when_an_end_is_free_elsewhere() -> None:
    seats = rows(("A", 6, "GENERAL"), ("B", 6, "GENERAL"))
    free = all_but(seats, "A1", "A2", "A5", "A6")  # A3-A4: a pair in the front row
    assert choose_seats(seats, free, SeatRequest(1)).seat_ids == ids("B3")


def test_the_middle_of_a_run_of_three_is_never_taken_alone() -> None:
    seats = rows(("A", 3, "GENERAL"))
    assert choose_seats(seats, [s.id for s in seats], SeatRequest(1)).seat_ids == ids("A1")


def test_a_gap_in_the_numbering_breaks_adjacency() -> None:
    seats = row("A", [1, 2, 4, 5])
    every = [s.id for s in seats]
    assert choose_seats(seats, every, SeatRequest(2)).seat_ids == ids("A1", "A2")
    assert not choose_seats(seats, every, SeatRequest(3)).ok


def test_tier_filters_the_seats_and_no_tier_takes_the_front() -> None:
    seats = generate_layout(
        [TicketTier("VIP", 100, "GBP", 4), TicketTier("GENERAL", 50, "GBP", 8)],
        seats_per_row=4,
    )
    every = [s.id for s in seats]
    assert choose_seats(seats, every, SeatRequest(3, tier="GENERAL")).seat_ids == ids(
        "B1", "B2", "B3"
    )
    assert choose_seats(seats, every, SeatRequest(4)).seat_ids == ids("A1", "A2", "A3", "A4")
    assert not choose_seats(seats, every, SeatRequest(2, tier="STANDING")).ok


# -- when no block fits ---------------------------------------------------------------------


def test_together_fails_saying_what_is_left() -> None:
    # VIP rows A (11 seats) and B (10), GENERAL row C (10, all free).
    seats = rows(("A", 11, "VIP"), ("B", 10, "VIP"), ("C", 10, "GENERAL"))
    free = all_but(seats, "A4", "A8", "B4", "B8")  # VIP runs: 3, 3, 3 and 3, 3, 2
    choice = choose_seats(seats, free, SeatRequest(4, tier="VIP"))
    assert not choice.ok and choice.seat_ids == ()
    assert (choice.largest_block, choice.available) == (3, 17)
    assert choice.message == "largest block of adjacent VIP seats: 3; 17 VIP seats left"
    # Without a tier the GENERAL row fits.
    assert choose_seats(seats, free, SeatRequest(4)).seat_ids == ids("C4", "C5", "C6", "C7")


def test_the_message_counts_every_tier_when_none_was_asked_for() -> None:
    assert unavailable_message(tier=None, largest_block=1, available=1) == (
        "largest block of adjacent seats: 1; 1 seat left"
    )
    assert unavailable_message(tier="GENERAL", largest_block=0, available=0) == (
        "largest block of adjacent GENERAL seats: 0; no GENERAL seats left"
    )
    assert unavailable_message(tier="VIP", largest_block=3, available=17) == (
        "largest block of adjacent VIP seats: 3; 17 VIP seats left"
    )


def test_not_together_takes_the_best_scattered_seats() -> None:
    seats = rows(("A", 5, "GENERAL"), ("B", 5, "GENERAL"))
    free = all_but(seats, "A2", "A4", "B1", "B2", "B4", "B5")  # A1, A3, A5, B3: no pair anywhere
    assert not choose_seats(seats, free, SeatRequest(2)).ok
    scattered = choose_seats(seats, free, SeatRequest(3, together=False))
    assert scattered.seat_ids == ids("A3", "A1", "A5")
    assert choose_seats(seats, free, SeatRequest(4, together=False)).seat_ids == ids(
        "A3", "A1", "A5", "B3"
    )
    short = choose_seats(seats, free, SeatRequest(5, together=False))
    assert not short.ok and short.message == "largest block of adjacent seats: 1; 4 seats left"


@pytest.mark.parametrize("quantity", [0, 11, -1])
def test_quantity_outside_one_to_ten_is_refused(quantity: int) -> None:
    with pytest.raises(ValueError):
        SeatRequest(quantity)


# -- choose and lock on the SeatMap --------------------------------------------------------


def test_choose_and_lock_holds_the_seats_it_chose_for_the_ttl() -> None:
    seats = rows(("A", 6, "GENERAL"))
    seat_map = SeatMap(tuple(s.id for s in seats))
    seat_map.use_layout(seats)
    first = seat_map.choose_and_lock("b1", SeatRequest(2), ttl=TTL, now=T0)
    assert first.ok and first.seat_ids == ids("A3", "A4") and first.expires_at == T0 + TTL
    assert seat_map.lock_of("b1") == (ids("A3", "A4"), T0 + TTL)
    # Asking again (a retried call) returns what the booking holds, with the first expiry.
    assert seat_map.choose_and_lock("b1", SeatRequest(2), ttl=TTL, now=T0 + 5) == first
    # Another booking gets other seats: A3-A4 are taken, and A2 alone would be isolated.
    second = seat_map.choose_and_lock("b2", SeatRequest(2), ttl=TTL, now=T0 + 5)
    assert second.seat_ids == ids("A1", "A2")
    # Once the first lock lapses its seats are chosen again.
    third = seat_map.choose_and_lock("b3", SeatRequest(2), ttl=TTL, now=T0 + TTL + 1)
    assert third.seat_ids == ids("A3", "A4")


def test_choose_and_lock_after_the_sale_returns_the_sold_seats() -> None:
    seats = rows(("A", 4, "GENERAL"))
    seat_map = SeatMap(tuple(s.id for s in seats))
    seat_map.use_layout(seats)
    chosen = seat_map.choose_and_lock("b1", SeatRequest(2), ttl=TTL, now=T0).seat_ids
    assert seat_map.begin_reserve("b1", now=T0).ok
    seat_map.settle_reserve("b1")
    assert seat_map.choose_and_lock("b1", SeatRequest(2), ttl=TTL, now=T0 + 1).seat_ids == chosen
    assert seat_map.summary(T0 + 1).reserved == 2 and seat_map.summary(T0 + 1).locked == 0


def test_choose_and_lock_fails_without_locking_when_no_block_fits() -> None:
    seats = rows(("A", 4, "VIP"))
    seat_map = SeatMap(tuple(s.id for s in seats))
    seat_map.use_layout(seats)
    assert seat_map.lock("b0", ids("A2"), ttl=TTL, now=T0).ok
    result = seat_map.choose_and_lock("b1", SeatRequest(3, tier="VIP"), ttl=TTL, now=T0)
    assert not result.ok and result.seat_ids == ()
    assert result.message == "largest block of adjacent VIP seats: 2; 3 VIP seats left"
    assert seat_map.lock_of("b1") is None and seat_map.summary(T0).locked == 1


def test_choose_and_lock_needs_the_layout() -> None:
    seat_map = SeatMap(ids("A1"))
    with pytest.raises(RuntimeError):
        seat_map.choose_and_lock("b1", SeatRequest(1), ttl=TTL, now=T0)
    assert not seat_map.has_layout()


def test_seats_restored_as_sold_are_not_chosen() -> None:
    seats = rows(("A", 3, "GENERAL"))
    seat_map = SeatMap(tuple(s.id for s in seats))
    seat_map.use_layout(seats)
    assert seat_map.choose_and_lock("probe", SeatRequest(1), ttl=TTL, now=T0).seat_ids == ids("A1")
    seat_map.release("probe")
    seat_map.restore_reserved("seat_A1", "sold")
    assert seat_map.choose_and_lock("b1", SeatRequest(1), ttl=TTL, now=T0).seat_ids == ids("A2")


def test_the_chooser_reads_availability_through_its_predicate() -> None:
    seats = rows(("A", 4, "GENERAL"))
    taken: set[str] = set()
    chooser = SeatChooser(seats, lambda s: s not in taken)
    assert chooser.choose(SeatRequest(2)).seat_ids == ids("A1", "A2")
    taken.update(ids("A1", "A2", "A3"))
    # Not told of the change: the cached runs still answer A1-A2...
    assert chooser.choose(SeatRequest(2)).seat_ids == ids("A1", "A2")
    # ...told, it sees the row as it is.
    chooser.seats_changed(ids("A1", "A2", "A3"))
    assert not chooser.choose(SeatRequest(2)).ok
    assert chooser.leftover(None) == (1, 1)
