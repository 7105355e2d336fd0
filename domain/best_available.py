"""Best available: which seats of an event to give a buyer who asked for a quantity, not seat ids.

The rules (docs/best-available.md has the why):

- Rows are ranked by their distance from the stage: the order in which the layout first shows
  them (`Seat.position`), rank 0 at the front. Rows never mix tiers in generated layouts.
- Two seats are adjacent when they are in the same row, of the same tier, and their numbers
  differ by one. Layouts have no aisles (numbers run 1..n in every row); a missing number would
  break adjacency all the same.
- A row's centre is the midpoint of its lowest and highest seat numbers. Distances from it are
  kept doubled so that they stay integers: a block starting at number `n` of `q` seats has its
  centre at `n + (q - 1) / 2`, and its centre offset is `|2n + q - 1 - (lo + hi)|`.
- together: the chosen block is the placement with the smallest key
  `(isolated seats it creates, row rank, centre offset, first seat number)`: never a single
  isolated available seat when another choice exists, then front, then centre, then left.
- together=false: the `quantity` seats with the smallest `(row rank, centre offset, number)`.

`SeatChooser` keeps, per row segment, the runs of free seats, recomputed lazily for the segments
whose seats changed since the last call (`seats_changed`), and per tier and quantity a mark
behind the front rows known to hold no such run, so a call costs the rows it scans past that
mark, not the event's seats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from domain.seating import Seat

MIN_QUANTITY = 1
MAX_QUANTITY = 10


@dataclass(frozen=True)
class SeatRequest:
    """What the buyer asked for: a quantity of seats, optionally of one tier, together or not."""

    quantity: int
    tier: str | None = None
    together: bool = True

    def __post_init__(self) -> None:
        if not MIN_QUANTITY <= self.quantity <= MAX_QUANTITY:
            raise ValueError(f"quantity must be {MIN_QUANTITY}-{MAX_QUANTITY}, not {self.quantity}")


@dataclass(frozen=True)
class Choice:
    """The seats chosen, best first; or, when none fit, what is left (`message` says it in words)."""

    ok: bool
    seat_ids: tuple[str, ...] = ()
    message: str = ""
    largest_block: int = 0  # when not ok: the longest run of adjacent available seats
    available: int = 0  # when not ok: available seats of the tier asked for


@dataclass(frozen=True)
class BestLockResult:
    """Seats chosen and locked for a booking (`SeatMap.choose_and_lock`); when not ok, `message`
    says what is left (the SEATS_UNAVAILABLE message)."""

    ok: bool
    seat_ids: tuple[str, ...] = ()
    expires_at: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class _Segment:
    """Consecutive seat numbers of one row and one tier: the unit in which seats are adjacent."""

    rank: int
    tier: str
    first: int  # number of seat_ids[0]
    seat_ids: tuple[str, ...]
    centre2: int  # twice the row's centre: lowest + highest number of the whole row


# A run of free seats: (first, last) offsets into its segment's seat_ids, inclusive.
_Run = tuple[int, int]


def _segments(seats: Iterable[Seat]) -> list[_Segment]:
    by_row: dict[str, list[Seat]] = {}
    first_position: dict[str, int] = {}
    for seat in seats:
        by_row.setdefault(seat.row, []).append(seat)
        first_position[seat.row] = min(first_position.get(seat.row, seat.position), seat.position)
    rows = sorted(by_row, key=lambda r: (first_position[r], r))
    segments: list[_Segment] = []
    for rank, row in enumerate(rows):
        row_seats = sorted(by_row[row], key=lambda s: s.number)
        centre2 = row_seats[0].number + row_seats[-1].number
        start = 0
        for i in range(1, len(row_seats) + 1):
            if (
                i == len(row_seats)
                or row_seats[i].number != row_seats[i - 1].number + 1
                or row_seats[i].tier != row_seats[i - 1].tier
            ):
                part = row_seats[start:i]
                segments.append(
                    _Segment(rank, part[0].tier, part[0].number, tuple(s.id for s in part), centre2)
                )
                start = i
    return segments


def _plural(count: int, tier: str | None) -> str:
    kind = f"{tier} " if tier else ""
    if count == 0:
        return f"no {kind}seats left"
    return f"{count} {kind}seat{'s' if count != 1 else ''} left"


def unavailable_message(*, tier: str | None, largest_block: int, available: int) -> str:
    """The SEATS_UNAVAILABLE message: what is left of the tier asked for."""
    kind = f"{tier} " if tier else ""
    return f"largest block of adjacent {kind}seats: {largest_block}; {_plural(available, tier)}"


class SeatChooser:
    """Chooses seats over a fixed layout; availability comes from a predicate the owner supplies.

    The owner must call `seats_changed` whenever a seat becomes available or unavailable; the free
    runs of the affected segments are then recomputed on the next `choose` (one pass over the
    segment's seats, i.e. one row). Memory: one entry per seat (its segment) plus the runs.
    """

    def __init__(self, seats: Iterable[Seat], is_available: Callable[[str], bool]) -> None:
        self._is_available = is_available
        self._segments = _segments(seats)
        count = len(self._segments)
        self._segment_of: dict[str, int] = {}
        for index, segment in enumerate(self._segments):
            for seat in segment.seat_ids:
                self._segment_of[seat] = index
        self._runs: list[tuple[_Run, ...] | None] = [None] * count  # None: to be recomputed
        self._longest = [0] * count  # the longest run, valid while the runs are
        # The segments a request may use, front to back: all of them, or those of one tier.
        self._lists: dict[str | None, list[int]] = {None: list(range(count))}
        self._tier_pos = [0] * count  # a segment's position in its tier's list
        for index, segment in enumerate(self._segments):
            tier_list = self._lists.setdefault(segment.tier, [])
            self._tier_pos[index] = len(tier_list)
            tier_list.append(index)
        # Low-water marks: _skip[tier][q] leading segments of that list have no run of q seats
        # (as last computed, and unchanged since), so a scan for q seats starts behind them. On
        # a filling event the front rows are full, and a scan would otherwise walk them all.
        self._skip = {key: [0] * (MAX_QUANTITY + 1) for key in self._lists}

    def knows(self, seat_id: str) -> bool:
        return seat_id in self._segment_of

    def seats_changed(self, seat_ids: Iterable[str]) -> None:
        for seat in seat_ids:
            index = self._segment_of.get(seat)
            if index is None or self._runs[index] is None:
                continue  # a segment already marked kept every mark at or before it
            self._runs[index] = None
            for key, pos in ((None, index), (self._segments[index].tier, self._tier_pos[index])):
                skips = self._skip[key]
                for q, mark in enumerate(skips):
                    if mark > pos:
                        skips[q] = pos

    def _runs_of(self, index: int) -> tuple[_Run, ...]:
        runs = self._runs[index]
        if runs is not None:
            return runs
        free = self._is_available
        found: list[_Run] = []
        start = -1
        seat_ids = self._segments[index].seat_ids
        for offset, seat in enumerate(seat_ids):
            if free(seat):
                if start < 0:
                    start = offset
            elif start >= 0:
                found.append((start, offset - 1))
                start = -1
        if start >= 0:
            found.append((start, len(seat_ids) - 1))
        runs = self._runs[index] = tuple(found)
        self._longest[index] = max((b - a + 1 for a, b in runs), default=0)
        return runs

    def _indices(self, tier: str | None) -> list[int]:
        return self._lists.get(tier, [])

    def _candidates(self, tier: str | None, quantity: int) -> Iterator[int]:
        """Segments that hold a run of `quantity` free seats, front to back; moves the mark."""
        segments = self._lists.get(tier)
        if segments is None:
            return
        skips = self._skip[tier]
        at_mark = True
        for pos in range(skips[quantity], len(segments)):
            index = segments[pos]
            self._runs_of(index)
            if self._longest[index] < quantity:
                if at_mark:
                    skips[quantity] = pos + 1
                continue
            at_mark = False
            yield index

    def leftover(self, tier: str | None) -> tuple[int, int]:
        """(largest block of adjacent available seats, available seats) of the tier."""
        largest = available = 0
        for index in self._indices(tier):
            for a, b in self._runs_of(index):
                available += b - a + 1
                largest = max(largest, b - a + 1)
        return largest, available

    def choose(self, request: SeatRequest) -> Choice:
        if request.together:
            chosen = self._block(request.quantity, request.tier)
        else:
            chosen = self._scattered(request.quantity, request.tier)
        if chosen is not None:
            return Choice(ok=True, seat_ids=chosen)
        largest, available = self.leftover(request.tier)
        return Choice(
            ok=False,
            message=unavailable_message(
                tier=request.tier, largest_block=largest, available=available
            ),
            largest_block=largest,
            available=available,
        )

    def _block(self, quantity: int, tier: str | None) -> tuple[str, ...] | None:
        best: tuple[int, int, int, int] | None = None  # (singles, rank, offset, number)
        best_at: tuple[int, int] = (0, 0)  # (segment, start offset)
        for index in self._candidates(tier, quantity):
            segment = self._segments[index]
            if best is not None and best[0] == 0 and segment.rank > best[1]:
                break  # nothing behind this row can beat a block that isolates no seat
            for a, b in self._runs_of(index):
                if b - a + 1 < quantity:
                    continue
                key, start = _best_in_run(a, b, quantity, segment)
                if best is None or key < best:
                    best, best_at = key, (index, start)
        if best is None:
            return None
        index, start = best_at
        return self._segments[index].seat_ids[start : start + quantity]

    def _scattered(self, quantity: int, tier: str | None) -> tuple[str, ...] | None:
        chosen: list[str] = []
        candidates: list[tuple[int, int, str]] = []  # (offset, number, seat) of the current rank
        rank = -1
        for index in self._candidates(tier, 1):
            segment = self._segments[index]
            if segment.rank != rank:
                chosen.extend(_take(candidates, quantity - len(chosen)))
                if len(chosen) == quantity:
                    return tuple(chosen)
                candidates, rank = [], segment.rank
            for a, b in self._runs_of(index):
                for offset in range(a, b + 1):
                    number = segment.first + offset
                    candidates.append(
                        (abs(2 * number - segment.centre2), number, segment.seat_ids[offset])
                    )
        chosen.extend(_take(candidates, quantity - len(chosen)))
        return tuple(chosen) if len(chosen) == quantity else None


def _take(candidates: list[tuple[int, int, str]], wanted: int) -> list[str]:
    if wanted <= 0 or not candidates:
        return []
    candidates.sort()
    return [seat for _, _, seat in candidates[:wanted]]


def _best_in_run(
    a: int, b: int, quantity: int, segment: _Segment
) -> tuple[tuple[int, int, int, int], int]:
    """The best start offset for a block inside the free run [a, b] of a segment, with its key.

    The centre offset falls away on both sides of the ideal start, and only the starts a + 1 and
    b - quantity (which leave one seat alone at an end of the run) isolate a seat, so the best
    start is the ideal one clamped into the run, or one at most two steps from it or an end.
    """
    last = b - quantity + 1
    ideal = (segment.centre2 - quantity + 1) // 2 - segment.first
    starts = {a, a + 2, last, last - 2, *range(ideal - 2, ideal + 4)}
    best: tuple[int, int, int, int] | None = None
    best_start = a
    for start in starts:
        if start < a or start > last:
            continue
        singles = (start - a == 1) + (b - (start + quantity - 1) == 1)
        number = segment.first + start
        key = (singles, segment.rank, abs(2 * number + quantity - 1 - segment.centre2), number)
        if best is None or key < best:
            best, best_start = key, start
    assert best is not None  # a is always a valid start: the run holds at least `quantity` seats
    return best, best_start


def choose_seats(seats: Iterable[Seat], available: Iterable[str], request: SeatRequest) -> Choice:
    """One-off choice over a seat list and the ids of its available seats (no index kept)."""
    free = frozenset(available)
    return SeatChooser(seats, free.__contains__).choose(request)
