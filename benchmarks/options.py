"""The command-line options the benchmarks share, and the configurations built from them.

`benchmarks.cli` builds the parser from these; `benchmarks.compare` turns parsed options into each
target's `OnsaleConfig`. Both import this module, neither imports the other's internals.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from actors import coalescer
from benchmarks.common import default_database_url, default_redis_url
from benchmarks.httpclient import CLIENT_KINDS
from benchmarks.onsale import PICKS, OnsaleConfig


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def int_list(text: str) -> list[int]:
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of integers, e.g. 100000,1000,50")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of integers >= 1")
    return values


def server_env_option(text: str) -> tuple[str, str]:
    from benchmarks.services import parse_server_env

    try:
        return parse_server_env(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


URL_HELP = "base URL of the running TicketFlow server, e.g. http://127.0.0.1:3000"


def add_onsale_options(
    p: argparse.ArgumentParser, *, url_required: bool, url_help: str = URL_HELP
) -> None:
    g = p.add_argument_group("on-sale scenario")
    g.add_argument("--url", required=url_required, default=None, help=url_help)
    g.add_argument(
        "--admin-email",
        default="admin@ticketflow.dev",
        help="ADMIN account used for set-up (default: %(default)s)",
    )
    g.add_argument(
        "--admin-password", default="Admin1234!", help="its password (default: %(default)s)"
    )
    g.add_argument(
        "--seats", type=positive_int, default=2000, help="seats in the event (default: %(default)s)"
    )
    g.add_argument(
        "--vip-fraction",
        type=float,
        default=0.1,
        help="share of the seats in the VIP tier, the rest GENERAL (default: %(default)s)",
    )
    g.add_argument(
        "--buyers",
        type=positive_int,
        default=100,
        help="buyers registered and logged in before the sale (not timed); attempts reuse them "
        "round-robin (default: %(default)s)",
    )
    g.add_argument(
        "--attempts",
        type=positive_int,
        default=6000,
        help="booking attempts at most (each with its retries) (default: %(default)s)",
    )
    g.add_argument(
        "--concurrency",
        type=positive_int,
        default=64,
        help="attempts in flight at once; also the HTTP connection pool size (default: %(default)s)",
    )
    g.add_argument(
        "--pick",
        choices=PICKS,
        default="random",
        help="how a buyer picks seats: random or adjacent among those believed available (named "
        "by seatIds), or best: asks for a random quantity 1-4 together and the server chooses "
        "(best available; --seats-per-booking does not apply) (default: %(default)s)",
    )
    g.add_argument(
        "--wait",
        action="store_true",
        help="send `Prefer: wait=10` on the POST (and on a GET while the booking is PENDING) "
        "instead of polling with backoff; works with every --pick",
    )
    g.add_argument(
        "--seats-per-booking",
        type=int,
        default=2,
        help="seats per booking, 1-10 (default: %(default)s)",
    )
    g.add_argument(
        "--retries",
        type=int,
        default=3,
        help="after FAILED/SEATS_UNAVAILABLE, try other seats up to this many times (default: %(default)s)",
    )
    g.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="stop releasing attempts after this many seconds (default: %(default)s)",
    )
    g.add_argument(
        "--poll-interval",
        type=float,
        default=0.02,
        help="first wait before polling a booking, in seconds; grows x1.5 per poll (default: %(default)s)",
    )
    g.add_argument(
        "--poll-max-interval",
        type=float,
        default=0.25,
        help="longest wait between two polls of one booking (default: %(default)s)",
    )
    g.add_argument(
        "--booking-timeout",
        type=float,
        default=30.0,
        help="give up polling a booking after this many seconds; counted as client TIMEOUT (default: %(default)s)",
    )
    g.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="HTTP timeout per request (default: %(default)s)",
    )
    g.add_argument(
        "--grace",
        type=float,
        default=15.0,
        help="after the phase, how long bookings may stay PENDING before counting as stuck (default: %(default)s)",
    )
    g.add_argument(
        "--setup-concurrency",
        type=positive_int,
        default=16,
        help="concurrent registrations/logins during set-up (default: %(default)s)",
    )
    g.add_argument(
        "--payment-token",
        default="pm_card_visa",
        help="card token buyers pay with (default: %(default)s)",
    )
    g.add_argument(
        "--decline-fraction",
        type=float,
        default=0.0,
        help="share of bookings paid with a declining card, to exercise compensation (default: %(default)s)",
    )
    g.add_argument(
        "--payment-check-sample",
        type=int,
        default=200,
        help="FAILED/SEATS_UNAVAILABLE bookings sampled for the no-charge check; all other FAILED "
        "bookings are checked (default: %(default)s)",
    )
    g.add_argument(
        "--seed", type=int, default=None, help="random seed for seat picks (default: random)"
    )
    g.add_argument(
        "--http-client",
        choices=CLIENT_KINDS,
        default="aiohttp",
        help="load generator's HTTP client; httpx costs ~6x the CPU per request (see "
        "benchmarks/httpclient.py) (default: %(default)s)",
    )
    g.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="always draw the progress line on stderr (default: only on a terminal)",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never draw it")


def onsale_config(args: argparse.Namespace, url: str, label: str = "") -> OnsaleConfig:
    return OnsaleConfig(
        url=url.rstrip("/"),
        seats=args.seats,
        vip_fraction=args.vip_fraction,
        buyers=args.buyers,
        attempts=args.attempts,
        concurrency=args.concurrency,
        pick=args.pick,
        wait=args.wait,
        seats_per_booking=args.seats_per_booking,
        retries=args.retries,
        duration=args.duration,
        poll_interval=args.poll_interval,
        poll_max_interval=args.poll_max_interval,
        booking_timeout=args.booking_timeout,
        request_timeout=args.request_timeout,
        grace=args.grace,
        setup_concurrency=args.setup_concurrency,
        payment_token=args.payment_token,
        decline_fraction=args.decline_fraction,
        payment_check_sample=args.payment_check_sample,
        admin_email=args.admin_email,
        admin_password=args.admin_password,
        label=label,
        seed=args.seed,
        progress=args.progress,
        http_client=args.http_client,
    )


def add_lock_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("lock engines")
    g.add_argument(
        "--lock-seats",
        type=int_list,
        default=[100_000, 1000, 50],
        help="contention levels: seats per event, comma-separated (default: 100000,1000,50)",
    )
    g.add_argument(
        "--lock-callers",
        type=positive_int,
        default=64,
        help="concurrent lockers (default: %(default)s)",
    )
    g.add_argument(
        "--lock-seconds",
        type=float,
        default=3.0,
        help="measured seconds per engine and level (default: %(default)s)",
    )
    g.add_argument(
        "--lock-warmup",
        type=float,
        default=0.5,
        help="unmeasured warm-up seconds per run (default: %(default)s)",
    )
    g.add_argument(
        "--lock-seats-per-op",
        type=int,
        default=2,
        help="seats per all-or-none lock (default: %(default)s)",
    )
    g.add_argument(
        "--lock-hold-ms",
        type=float,
        default=0.0,
        help="how long a granted lock is held before its release (default: %(default)s)",
    )
    g.add_argument(
        "--batch-max",
        type=positive_int,
        default=coalescer.MAX_BATCH,
        help="coalescing: most lock/release requests per actor call (default: the saga "
        "actors' %(default)s)",
    )
    g.add_argument(
        "--batch-wait-ms",
        type=float,
        default=coalescer.MAX_WAIT_SECONDS * 1000,
        help="coalescing: longest a request waits for its batch to fill (default: the saga "
        "actors' %(default)s)",
    )
    g.add_argument(
        "--batch-in-flight",
        type=int,
        default=coalescer.MAX_IN_FLIGHT or 0,
        help="coalescing: batches of one event in flight at once, a new one leaving when one "
        "returns; 0 for no limit (default: the saga actors' %(default)s)",
    )
    g.add_argument(
        "--engines",
        default="ray-batched,ray,redis-batched,redis,pg-skip-locked,pg-update",
        help="engines to run, comma-separated from ray-batched, ray, redis-batched, redis, "
        "pg-skip-locked, pg-update (default: %(default)s)",
    )
    g.add_argument(
        "--database-url",
        default=default_database_url(),
        help="Postgres for the baselines (schemas tf_bench_* are created and dropped there) "
        "and, in compare, the server of TicketFlow's scratch database tf_bench_app_<hex> "
        "(default: $DATABASE_URL or %(default)s)",
    )
    g.add_argument(
        "--redis-url",
        default=default_redis_url(),
        help="Redis for the baselines (keys under tf:bench:, removed afterwards) and the "
        "REDIS_URL of the TicketFlow server compare starts (default: $REDIS_URL or %(default)s)",
    )


def add_pretix_options(p: argparse.ArgumentParser) -> None:
    from benchmarks.pretix.install import DEFAULT_PRETIX_DIR
    from benchmarks.pretix.server import DEFAULT_PRETIX_REDIS_URL, DEFAULT_WORKERS

    g = p.add_argument_group("pretix (with --baselines ...,pretix)")
    g.add_argument(
        "--pretix-dir",
        type=Path,
        default=DEFAULT_PRETIX_DIR,
        help="pretix's virtual environment lives here, installed from PyPI on first use "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--pretix-redis-url",
        default=DEFAULT_PRETIX_REDIS_URL,
        help="a Redis database of pretix's own for its cache and sessions; EMPTIED when pretix "
        "stops (default: %(default)s)",
    )
    g.add_argument(
        "--pretix-workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        help="gunicorn sync workers, as pretix's installation guide runs it (default: %(default)s)",
    )


def add_queue_options(p: argparse.ArgumentParser) -> None:
    """`bench onsale --queue N`: the same sale behind the waiting room (benchmarks/queue.py)."""
    g = p.add_argument_group("waiting room (issue 15)")
    g.add_argument(
        "--queue",
        type=positive_int,
        default=None,
        metavar="N",
        help="put N buyers (each a user of its own; replaces --buyers and --attempts) in the "
        "event's waiting room, admit them, book with their admission tokens, then run the same "
        "sale without the room, unloaded, for comparison",
    )
    g.add_argument(
        "--admit-per-minute",
        type=positive_int,
        default=None,
        help="the room's admission rate (default: auto)",
    )
    g.add_argument(
        "--baseline-concurrency",
        type=positive_int,
        default=4,
        help="buyers at once in the unloaded reference sale (default: %(default)s)",
    )
    g.add_argument(
        "--no-baseline", action="store_true", help="skip the reference sale without the room"
    )
    g.add_argument(
        "--tell-seconds",
        type=float,
        default=120.0,
        help="after the sell-out, how long buyers still in line go on looking at their place "
        "(to hear that it closed; default: %(default)s)",
    )
