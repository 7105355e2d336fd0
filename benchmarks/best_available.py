"""Micro-benchmark of best available: `SeatMap.choose_and_lock` on a big event, sold to the end.

Run: `python -m benchmarks.best_available [--seats 20000] [--per-row 20]`. Prints the CPU time per
call (thread time, so that other processes on a busy machine do not count) by how full the event
was, and the one-off cost of giving the map its layout.
"""

from __future__ import annotations

import argparse
import random
import time

from domain.best_available import SeatRequest
from domain.inventory import SeatMap
from domain.seating import TicketTier, generate_layout


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seats", type=int, default=20_000)
    parser.add_argument("--per-row", type=int, default=20)
    parser.add_argument("--scattered-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    vip = args.seats // 10
    seats = generate_layout(
        [
            TicketTier("VIP", 25_000, "GBP", vip),
            TicketTier("GENERAL", 7_500, "GBP", args.seats - vip),
        ],
        seats_per_row=args.per_row,
    )
    seat_map = SeatMap(tuple(s.id for s in seats))
    started = time.thread_time()
    seat_map.use_layout(seats)
    print(f"use_layout: {(time.thread_time() - started) * 1e3:.1f} ms CPU for {len(seats)} seats")
    rnd = random.Random(args.seed)
    buckets: dict[int, list[float]] = {}
    failed: list[float] = []
    holders: list[str] = []
    n = 0
    while seat_map.summary(0.0).available > 0 and n < 4 * len(seats):
        request = SeatRequest(
            rnd.randint(1, 4),
            tier=rnd.choice(["VIP", "GENERAL", "GENERAL", None]),
            together=rnd.random() >= args.scattered_share,
        )
        fill = 10 * (len(seats) - seat_map.summary(0.0).available) // len(seats)
        started = time.thread_time()
        result = seat_map.choose_and_lock(f"b{n}", request, ttl=300.0, now=0.0)
        spent = time.thread_time() - started
        (buckets.setdefault(fill, []) if result.ok else failed).append(spent)
        if result.ok:
            holders.append(f"b{n}")
        if holders and rnd.random() < 0.05:  # an abandoned checkout: its seats come back
            seat_map.release(holders.pop(rnd.randrange(len(holders))))
        n += 1
    print(f"{n} calls; CPU per choose_and_lock in microseconds, by how full the event was")
    print("fill      calls  median    p99     max")
    for fill in sorted(buckets):
        v = buckets[fill]
        print(
            f"{fill * 10:3d}-{fill * 10 + 9:2d}%  {len(v):6d}  {_percentile(v, 0.5) * 1e6:6.1f} "
            f"{_percentile(v, 0.99) * 1e6:7.1f} {max(v) * 1e6:7.1f}"
        )
    if failed:
        print(
            f"refused  {len(failed):6d}  {_percentile(failed, 0.5) * 1e6:6.1f} "
            f"{_percentile(failed, 0.99) * 1e6:7.1f} {max(failed) * 1e6:7.1f}"
        )


if __name__ == "__main__":
    main()
