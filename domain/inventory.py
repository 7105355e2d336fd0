"""The seat map of one event as a state machine: who holds which seat, until when.

Every method is synchronous and does its whole check-and-change in one call, so the actor that
wraps it stays serialised: no other caller can run between the check and the change.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from domain.best_available import BestLockResult, SeatChooser, SeatRequest
from domain.seating import Seat


class SeatStatus(StrEnum):
    AVAILABLE = "AVAILABLE"
    LOCKED = "LOCKED"
    RESERVED = "RESERVED"


@dataclass(frozen=True)
class LockResult:
    ok: bool
    expires_at: float = 0.0
    conflicts: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReserveResult:
    ok: bool
    seat_ids: tuple[str, ...] = ()
    reason: str = ""  # "LOCK_EXPIRED" | "NOT_LOCKED" when not ok


@dataclass
class _Lock:
    seat_ids: tuple[str, ...]
    expires_at: float
    reserving: bool = False  # set while the sale is being written; the sweeper leaves it alone


@dataclass(frozen=True)
class Summary:
    total: int
    available: int
    locked: int
    reserved: int


@dataclass
class SeatMap:
    """All seats of one event. Times are plain floats (seconds) supplied by the caller."""

    seat_ids: tuple[str, ...]
    _reserved: dict[str, str] = field(default_factory=dict)  # seat -> booking
    _locked: dict[str, str] = field(default_factory=dict)  # seat -> booking
    _locks: dict[str, _Lock] = field(default_factory=dict)  # booking -> lock
    _sales: dict[str, tuple[str, ...]] = field(default_factory=dict)  # booking -> sold seats
    _known: frozenset[str] = field(default_factory=frozenset)
    # (expires_at, booking) for every lock ever taken; stale entries are skipped when popped, so
    # expiry costs O(log n) per lock instead of a scan of every lock on every call.
    _expiry_heap: list[tuple[float, str]] = field(default_factory=list)
    # Rows, numbers and tiers, for choosing seats (best available); None until a layout is given.
    _chooser: SeatChooser | None = None

    def __post_init__(self) -> None:
        self._known = frozenset(self.seat_ids)

    def _changed(self, seat_ids: Iterable[str]) -> None:
        if self._chooser is not None:
            self._chooser.seats_changed(seat_ids)

    def _is_available(self, seat_id: str) -> bool:
        return seat_id not in self._locked and seat_id not in self._reserved

    def use_layout(self, seats: Iterable[Seat]) -> None:
        """Gives the map its rows and tiers so that it can choose seats; a second call is a no-op."""
        if self._chooser is None:
            self._chooser = SeatChooser(
                [s for s in seats if s.id in self._known], self._is_available
            )

    def has_layout(self) -> bool:
        return self._chooser is not None

    # -- restoring state --------------------------------------------------------------------
    def restore_reserved(self, seat_id: str, booking_id: str) -> None:
        if seat_id in self._known:
            self._reserved[seat_id] = booking_id
            self._sales[booking_id] = (*self._sales.get(booking_id, ()), seat_id)
            self._changed((seat_id,))

    def restore_lock(
        self, booking_id: str, seat_ids: Iterable[str], expires_at: float, now: float
    ) -> bool:
        """Re-applies a lock persisted by a saga; False if it expired or collides."""
        return self.lock(booking_id, tuple(seat_ids), ttl=expires_at - now, now=now).ok

    # -- the operations ---------------------------------------------------------------------
    def lock(
        self, booking_id: str, seat_ids: tuple[str, ...], *, ttl: float, now: float
    ) -> LockResult:
        """All or none. Re-locking for the same booking is idempotent (keeps the first expiry)."""
        if ttl <= 0:
            return LockResult(ok=False, conflicts=seat_ids)
        unknown = tuple(s for s in seat_ids if s not in self._known)
        if unknown:
            return LockResult(ok=False, unknown=unknown)
        self.expire(now)
        existing = self._locks.get(booking_id)
        if existing is not None:
            if set(existing.seat_ids) == set(seat_ids):
                return LockResult(ok=True, expires_at=existing.expires_at)
            return LockResult(
                ok=False, conflicts=tuple(s for s in seat_ids if s not in existing.seat_ids)
            )
        if booking_id in self._sales and set(self._sales[booking_id]) == set(seat_ids):
            # Already sold to this very booking (a retried step after the reserve): nothing to hold.
            return LockResult(ok=True, expires_at=now + ttl)
        conflicts = tuple(
            s
            for s in seat_ids
            if (s in self._reserved) or (self._locked.get(s, booking_id) != booking_id)
        )
        if conflicts:
            return LockResult(ok=False, conflicts=conflicts)
        expires_at = now + ttl
        self._locks[booking_id] = _Lock(tuple(seat_ids), expires_at)
        heapq.heappush(self._expiry_heap, (expires_at, booking_id))
        for s in seat_ids:
            self._locked[s] = booking_id
        self._changed(seat_ids)
        return LockResult(ok=True, expires_at=expires_at)

    def choose_and_lock(
        self, booking_id: str, request: SeatRequest, *, ttl: float, now: float
    ) -> BestLockResult:
        """Chooses the best available seats for the request and locks them, in one step.

        Idempotent for the booking: while it holds a lock (or once it bought its seats) the same
        seats come back, whatever the request says, with the lock's first expiry.

        Raises:
            RuntimeError: the map was given no layout (`use_layout`).
        """
        if self._chooser is None:
            raise RuntimeError("choose_and_lock needs the seat layout: call use_layout first")
        if ttl <= 0:
            return BestLockResult(ok=False, message="the lock TTL must be positive")
        self.expire(now)
        existing = self._locks.get(booking_id)
        if existing is not None:
            return BestLockResult(
                ok=True, seat_ids=existing.seat_ids, expires_at=existing.expires_at
            )
        if booking_id in self._sales:
            return BestLockResult(ok=True, seat_ids=self._sales[booking_id], expires_at=now + ttl)
        choice = self._chooser.choose(request)
        if not choice.ok:
            return BestLockResult(ok=False, message=choice.message)
        locked = self.lock(booking_id, choice.seat_ids, ttl=ttl, now=now)
        # The chooser only returns available seats and nothing ran in between: this cannot fail.
        assert locked.ok, locked
        return BestLockResult(ok=True, seat_ids=choice.seat_ids, expires_at=locked.expires_at)

    def release(self, booking_id: str) -> tuple[str, ...]:
        """Frees the booking's lock; a late or repeated call touches nothing else."""
        lock = self._locks.get(booking_id)
        if lock is None or lock.reserving:
            # A sale being written is settled or aborted by its own reserve call, never here.
            return ()
        del self._locks[booking_id]
        for s in lock.seat_ids:
            if self._locked.get(s) == booking_id:
                del self._locked[s]
        self._changed(lock.seat_ids)
        return lock.seat_ids

    def begin_reserve(self, booking_id: str, *, now: float) -> ReserveResult:
        """First half of a sale: only the owner of a live lock may reserve."""
        if booking_id in self._sales:
            return ReserveResult(ok=True, seat_ids=self._sales[booking_id])
        lock = self._locks.get(booking_id)
        if lock is None:
            return ReserveResult(ok=False, reason="NOT_LOCKED")
        if not lock.reserving and lock.expires_at <= now:
            self.release(booking_id)
            return ReserveResult(ok=False, reason="LOCK_EXPIRED")
        lock.reserving = True
        return ReserveResult(ok=True, seat_ids=lock.seat_ids)

    def settle_reserve(self, booking_id: str) -> tuple[str, ...]:
        """Second half, once the sale is written: the seats become RESERVED."""
        if booking_id in self._sales:
            return self._sales[booking_id]
        lock = self._locks.get(booking_id)
        if lock is not None:
            lock.reserving = False
        seats = self.release(booking_id)
        for s in seats:
            self._reserved[s] = booking_id
        if seats:
            self._sales[booking_id] = seats
        return seats

    def abort_reserve(self, booking_id: str) -> None:
        """The sale could not be written: the lock stays, with its original expiry."""
        lock = self._locks.get(booking_id)
        if lock is not None:
            lock.reserving = False
            heapq.heappush(self._expiry_heap, (lock.expires_at, booking_id))

    def unreserve(self, booking_id: str) -> tuple[str, ...]:
        """Cancellation: the booking's sold seats become AVAILABLE; nobody else's are touched."""
        seats = self._sales.pop(booking_id, ())
        for s in seats:
            if self._reserved.get(s) == booking_id:
                del self._reserved[s]
        self._changed(seats)
        return seats

    def expire(self, now: float) -> list[str]:
        """Frees every lock past its expiry; returns the bookings whose locks lapsed."""
        lapsed: list[str] = []
        while self._expiry_heap and self._expiry_heap[0][0] <= now:
            expires_at, booking_id = heapq.heappop(self._expiry_heap)
            lock = self._locks.get(booking_id)
            if lock is None or lock.expires_at != expires_at:
                continue
            if lock.reserving:
                # A sale being written outlives its expiry; abort_reserve puts it back on the heap.
                continue
            self.release(booking_id)
            lapsed.append(booking_id)
        return lapsed

    # -- reading ----------------------------------------------------------------------------
    def status_of(self, seat_id: str) -> SeatStatus:
        if seat_id in self._reserved:
            return SeatStatus.RESERVED
        if seat_id in self._locked:
            return SeatStatus.LOCKED
        return SeatStatus.AVAILABLE

    def statuses(self, now: float) -> dict[str, SeatStatus]:
        self.expire(now)
        return {s: self.status_of(s) for s in self.seat_ids}

    def summary(self, now: float) -> Summary:
        self.expire(now)
        total = len(self.seat_ids)
        reserved = len(self._reserved)
        locked = len(self._locked)
        return Summary(
            total=total, available=total - reserved - locked, locked=locked, reserved=reserved
        )

    def holds_anything(self) -> bool:
        return bool(self._locks)

    def lock_of(self, booking_id: str) -> tuple[tuple[str, ...], float] | None:
        lock = self._locks.get(booking_id)
        return (lock.seat_ids, lock.expires_at) if lock else None
