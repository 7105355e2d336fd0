"""Every SQL statement TicketFlow runs, one constant each, values always as $n parameters.

Why ~450 lines in one module: the style keeps all SQL in one place (STYLE.md section 7), so that
a schema change is checked against every statement in one read; each constant is short.
"""

from domain.bookings import BOOKING_FINAL_CHANNEL as _FINAL_CHANNEL

# -- migrations ---------------------------------------------------------------------------------
LOCK_MIGRATIONS = "SELECT pg_advisory_lock($1)"
UNLOCK_MIGRATIONS = "SELECT pg_advisory_unlock($1)"
CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
SELECT_APPLIED_MIGRATIONS = "SELECT version FROM schema_migrations ORDER BY version"
INSERT_MIGRATION = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"
SELECT_ONE = "SELECT 1"

# -- users --------------------------------------------------------------------------------------
INSERT_USER = """
INSERT INTO users (id, name, email, password_hash, role)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (email) DO NOTHING
RETURNING id, name, email, role, created_at"""
SELECT_USER_BY_ID = "SELECT id, name, email, role, created_at FROM users WHERE id = $1"
SELECT_USER_BY_EMAIL = "SELECT id, name, email, role, created_at FROM users WHERE email = $1"
SELECT_USER_LOGIN = """
SELECT id, name, email, role, created_at, password_hash FROM users WHERE email = $1"""

# -- venues -------------------------------------------------------------------------------------
INSERT_VENUE = """
INSERT INTO venues (id, name, address, city, country, capacity)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, name, address, city, country, capacity, created_at"""
SELECT_VENUE_BY_ID = """
SELECT id, name, address, city, country, capacity, created_at FROM venues WHERE id = $1"""
SELECT_VENUE_BY_NAME = """
SELECT id, name, address, city, country, capacity, created_at FROM venues WHERE name = $1
ORDER BY created_at LIMIT 1"""

# -- events -------------------------------------------------------------------------------------
_EVENT_COLUMNS = """
e.id, e.name, e.description, e.starts_at, e.ends_at, e.created_at, e.updated_at,
e.sales_start_at, e.waiting_room, e.admit_per_minute,
v.id AS venue_id, v.name AS venue_name, v.city AS venue_city, v.capacity AS venue_capacity"""
INSERT_EVENT = """
INSERT INTO events (id, venue_id, name, description, starts_at, ends_at, sales_start_at,
                    waiting_room, admit_per_minute)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING id, name, created_at"""
SELECT_EVENT_BY_ID = f"""
SELECT {_EVENT_COLUMNS}
FROM events e JOIN venues v ON v.id = e.venue_id
WHERE e.id = $1"""
LOCK_EVENT_FOR_UPDATE = "SELECT id FROM events WHERE id = $1 FOR UPDATE"
UPDATE_EVENT_FIELDS = """
UPDATE events SET name = $2, description = $3, starts_at = $4, ends_at = $5, sales_start_at = $6,
       waiting_room = $7, admit_per_minute = $8, updated_at = now()
WHERE id = $1"""
UPDATE_EVENT_VENUE = "UPDATE events SET venue_id = $2, updated_at = now() WHERE id = $1"
# Events on sale ($1 = now: sale open, not started), the soonest first, at most $2 (start-up warming).
SELECT_EVENTS_ON_SALE_SOONEST = """
SELECT id FROM events
WHERE starts_at > $1 AND (sales_start_at IS NULL OR sales_start_at <= $1)
ORDER BY starts_at, id LIMIT $2"""
# Sales opening within $2 after $1 (now) or opened less than $3 before it, of events not started:
# the seat actors the warmer starts ahead of the opening and keeps warm while the sale is hot.
SELECT_SALES_OPENING = """
SELECT id FROM events
WHERE sales_start_at IS NOT NULL
  AND sales_start_at <= $1::timestamptz + $2::interval
  AND sales_start_at > $1::timestamptz - $3::interval AND starts_at > $1
ORDER BY sales_start_at, id LIMIT $4"""
# Upcoming events ($1 = now), optional venue ($2), from ($3, inclusive) and to ($4, exclusive).
_UPCOMING_FILTER = """
WHERE e.starts_at >= $1
  AND ($2::text IS NULL OR e.venue_id = $2)
  AND ($3::timestamptz IS NULL OR e.starts_at >= $3)
  AND ($4::timestamptz IS NULL OR e.starts_at < $4)"""
SELECT_UPCOMING_EVENTS = f"""
SELECT {_EVENT_COLUMNS}
FROM events e JOIN venues v ON v.id = e.venue_id
{_UPCOMING_FILTER}
ORDER BY e.starts_at, e.id
LIMIT $5 OFFSET $6"""
COUNT_UPCOMING_EVENTS = f"SELECT count(*) FROM events e {_UPCOMING_FILTER}"
SELECT_TIERS_FOR_EVENTS = """
SELECT event_id, tier, price, currency, capacity FROM ticket_tiers
WHERE event_id = ANY($1::text[]) ORDER BY event_id, position"""
INSERT_TIER = """
INSERT INTO ticket_tiers (event_id, tier, position, price, currency, capacity)
VALUES ($1, $2, $3, $4, $5, $6)"""
DELETE_SEATS_OF_EVENT = "DELETE FROM seats WHERE event_id = $1"
DELETE_TIERS_OF_EVENT = "DELETE FROM ticket_tiers WHERE event_id = $1"
SEAT_COLUMNS = ("event_id", "seat_id", "row_label", "number", "tier", "position")
SELECT_SEATS_OF_EVENT = """
SELECT s.seat_id, s.row_label, s.number, s.tier, s.position, t.price, t.currency
FROM seats s JOIN ticket_tiers t ON t.event_id = s.event_id AND t.tier = s.tier
WHERE s.event_id = $1 ORDER BY s.position"""
SELECT_SEAT_PRICES = """
SELECT s.seat_id, t.price, t.currency
FROM seats s JOIN ticket_tiers t ON t.event_id = s.event_id AND t.tier = s.tier
WHERE s.event_id = $1 AND s.seat_id = ANY($2::text[])"""
# Seats held right now: sold (active sale) or locked by a pending booking whose lock is live.
_HELD_SEATS = """
held AS (
    SELECT event_id, seat_id, bool_or(sold) AS sold FROM (
        SELECT event_id, seat_id, true AS sold FROM seat_sales
        WHERE event_id = ANY($1::text[]) AND released_at IS NULL
        UNION ALL
        SELECT b.event_id, u.seat_id, false FROM bookings b
        CROSS JOIN LATERAL unnest(b.seat_ids) AS u(seat_id)
        WHERE b.event_id = ANY($1::text[]) AND b.status = 'PENDING' AND b.lock_expires_at > now()
    ) h GROUP BY event_id, seat_id
)"""
SELECT_HELD_COUNTS_BY_TIER = f"""
WITH {_HELD_SEATS}
SELECT s.event_id, s.tier,
       count(*) FILTER (WHERE h.sold) AS reserved,
       count(*) FILTER (WHERE NOT h.sold) AS locked
FROM held h JOIN seats s ON s.event_id = h.event_id AND s.seat_id = h.seat_id
GROUP BY s.event_id, s.tier"""
SELECT_HELD_SEATS = f"""
WITH {_HELD_SEATS}
SELECT seat_id, sold FROM held"""
EVENT_HAS_ACTIVE_BOOKINGS = """
SELECT EXISTS (SELECT 1 FROM bookings WHERE event_id = $1 AND status IN ('PENDING', 'CONFIRMED'))
    OR EXISTS (SELECT 1 FROM seat_sales WHERE event_id = $1 AND released_at IS NULL)"""
SELECT_EVENTS_OF_VENUE = f"""
SELECT {_EVENT_COLUMNS}
FROM events e JOIN venues v ON v.id = e.venue_id
WHERE e.venue_id = $1 AND e.starts_at >= $2
ORDER BY e.starts_at, e.id
LIMIT 100"""
# The waiting rooms to tick (the admitter, every second): events with a room on whose sale is open
# ($1 = now) and that have not started, with what the pacing needs: seats in all, sold (active
# sales) and bookings confirmed (their distinct bookings), seats under a live lock, bookings in
# flight (PENDING), the buyers who booked since $3 (the start of the admission window: their
# bookings made since then that hold seats, sold or under a live lock, by distinct user; a
# booking not locked yet holds no seat, so its buyer still counts as holding one), and the bookings
# that failed on the shop's account (LOCK_EXPIRED, INTERNAL_ERROR) since $4 (the auto rate's error
# share). Every part is a lookup in an index of its own event (sales by event, PENDING bookings by
# event, the shop's failures by event and time: migration 0009), the buyers a primary-key join per
# sale.
SELECT_ROOM_SALES = """
SELECT e.id, e.sales_start_at, e.admit_per_minute,
       (SELECT count(*) FROM seats s WHERE s.event_id = e.id) AS seats,
       ss.sold, ss.confirmed, p.locked, p.in_flight, rb.recent_buyers, f.failed
FROM events e
CROSS JOIN LATERAL (
    SELECT count(*) AS sold, count(DISTINCT booking_id) AS confirmed
    FROM seat_sales WHERE event_id = e.id AND released_at IS NULL
) ss
CROSS JOIN LATERAL (
    SELECT count(*) AS in_flight,
           coalesce(sum(cardinality(seat_ids)) FILTER (WHERE lock_expires_at > $1), 0) AS locked
    FROM bookings WHERE event_id = e.id AND status = 'PENDING'
) p
CROSS JOIN LATERAL (
    SELECT count(DISTINCT u.user_id) AS recent_buyers FROM (
        SELECT b.user_id FROM seat_sales s JOIN bookings b ON b.id = s.booking_id
        WHERE s.event_id = e.id AND s.released_at IS NULL AND b.created_at > $3
        UNION ALL
        SELECT b.user_id FROM bookings b
        WHERE b.event_id = e.id AND b.status = 'PENDING' AND b.lock_expires_at > $1
          AND b.created_at > $3
    ) u
) rb
CROSS JOIN LATERAL (
    SELECT count(*) AS failed FROM bookings
    WHERE event_id = e.id AND status = 'FAILED' AND failure_reason IN ('LOCK_EXPIRED', 'INTERNAL_ERROR')
      AND failed_at > $4
) f
WHERE e.waiting_room AND e.starts_at > $1 AND (e.sales_start_at IS NULL OR e.sales_start_at <= $1)
ORDER BY e.starts_at, e.id
LIMIT $2"""
# Events with a room on that started between $2 and $1 (now): SELECT_ROOM_SALES no longer lists
# them, and the admitter closes their rooms so that waiters read CLOSED (events_waiting_room_idx).
SELECT_STARTED_ROOM_EVENTS = """
SELECT id FROM events
WHERE waiting_room AND starts_at <= $1 AND starts_at > $2
ORDER BY starts_at, id
LIMIT $3"""

# -- seat inventory (the seat actor's view) -----------------------------------------------------
SELECT_SEAT_IDS_OF_EVENT = "SELECT seat_id FROM seats WHERE event_id = $1 ORDER BY position"
SELECT_ACTIVE_SALES_OF_EVENT = """
SELECT seat_id, booking_id FROM seat_sales WHERE event_id = $1 AND released_at IS NULL"""
SELECT_LIVE_LOCKS_OF_EVENT = """
SELECT id, seat_ids, lock_expires_at FROM bookings
WHERE event_id = $1 AND status = 'PENDING' AND lock_expires_at > now()
ORDER BY created_at"""
# Many bookings' sales in one statement ($2 seats and $3 their bookings, pairwise). Idempotent per
# booking: a repeated reserve of a booking that already holds its sale inserts nothing for it; a
# seat held by another active sale violates seat_sales_active_key and the whole statement fails.
# OFFSET 0 keeps the check a lookup per new row in seat_sales_booking_idx: as a join, the cached
# generic plan hashes every active sale of every event for each batch.
INSERT_SEAT_SALES = """
INSERT INTO seat_sales (event_id, seat_id, booking_id)
SELECT $1, u.seat_id, u.booking_id FROM unnest($2::text[], $3::text[]) AS u(seat_id, booking_id)
WHERE NOT EXISTS (
    SELECT 1 FROM seat_sales s WHERE s.booking_id = u.booking_id AND s.released_at IS NULL OFFSET 0
)"""
BOOKING_HAS_SALE = """
SELECT EXISTS (SELECT 1 FROM seat_sales WHERE booking_id = $1 AND released_at IS NULL)"""

# -- bookings -----------------------------------------------------------------------------------
_BOOKING_COLUMNS = """
b.id, b.user_id, b.event_id, b.seat_ids, b.status, b.saga_step, b.saga_slot, b.failure_reason,
b.total_amount, b.currency, b.payment_token, b.payment_id, b.lock_expires_at, b.created_at,
b.updated_at, b.confirmed_at, b.failed_at, b.cancelled_at, b.seat_request, b.failure_message,
e.name AS event_name, e.starts_at AS event_date, v.name AS venue_name"""
_BOOKING_FROM = (
    "FROM bookings b JOIN events e ON e.id = b.event_id JOIN venues v ON v.id = e.venue_id"
)
# A new booking in one round trip: priced on the server from its seats' tiers ($3 event, $4 seats),
# inserted only when every seat is a seat of the event, the event is on sale (its sale has opened,
# `sales_start_at`, and it has not started) and the caller may book it (no waiting room, or $11:
# the Gateway verified the caller's admission token for this event), all checked here, not in
# statements of their own, and announced with what its saga needs on its saga slot's channel
# ($8): the saga actor listening there starts it once the insert commits (and never for an insert
# that did not happen). $7/$9: the Idempotency-Key and the hash of the request it comes with.
# Returns how many of the seats the event has, whether the event is on sale (NULL: no such
# event), whether the caller is admitted, and the new booking's id (NULL when the seats did not
# all match, the event is not on sale, the caller is not admitted or the idempotency key was taken).
_EVENT_GATE = """
    SELECT e.starts_at,
           e.starts_at > now() AND (e.sales_start_at IS NULL OR e.sales_start_at <= now()) AS on_sale,
           NOT e.waiting_room OR {admitted}::boolean AS admitted"""
INSERT_BOOKING = f"""
WITH ev AS ({_EVENT_GATE.format(admitted="$11")}
    FROM events e WHERE e.id = $3
), priced AS (
    SELECT count(*) AS seats, sum(t.price) AS amount, min(t.currency) AS currency
    FROM seats s JOIN ticket_tiers t ON t.event_id = s.event_id AND t.tier = s.tier
    WHERE s.event_id = $3 AND s.seat_id = ANY($4::text[])
), created AS (
    INSERT INTO bookings (id, user_id, event_id, seat_ids, status, saga_step, saga_slot,
                          total_amount, currency, payment_token, idempotency_key, idempotency_hash,
                          request_id)
    SELECT $1, $2, $3, $4, 'PENDING', 'STARTED', $5, p.amount, p.currency, $6, $7, $9, $10
    FROM priced p, ev
    WHERE p.seats = cardinality($4::text[]) AND ev.on_sale AND ev.admitted
    ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, user_id, event_id, seat_ids, total_amount, currency, payment_token, created_at, request_id
)
SELECT p.seats, ev.on_sale, ev.admitted, c.id,
       CASE WHEN c.id IS NOT NULL THEN pg_notify($8, json_build_object(
           'id', c.id, 'user_id', c.user_id, 'event_id', c.event_id, 'seat_ids', c.seat_ids,
           'amount', c.total_amount, 'currency', c.currency, 'payment_token', c.payment_token,
           'created_at', c.created_at, 'event_starts_at', ev.starts_at,
           'request_id', c.request_id)::text) END AS announced
FROM priced p LEFT JOIN ev ON true LEFT JOIN created c ON true"""
# Best available: the booking asks for `quantity` seats ($4 the request as JSON, $10 its tier or
# NULL, $11 the HTTP request's id, $12 admitted as in INSERT_BOOKING) and gets its seats and price
# when its saga's seat actor has chosen them. Inserted only when the event exists, is on sale,
# admits the caller and sells the tier asked for (the currency comes from its tiers); announced
# like INSERT_BOOKING. Returns whether the event is on sale (NULL: no such event), whether the
# caller is admitted, whether it sells that tier, and the new booking's id.
INSERT_BEST_BOOKING = f"""
WITH ev AS ({_EVENT_GATE.format(admitted="$12")},
           (SELECT min(t.currency) FROM ticket_tiers t WHERE t.event_id = e.id AND ($10::text IS NULL OR t.tier = $10)) AS currency
    FROM events e WHERE e.id = $3
), created AS (
    INSERT INTO bookings (id, user_id, event_id, seat_ids, seat_request, status, saga_step, saga_slot,
                          total_amount, currency, payment_token, idempotency_key, idempotency_hash, request_id)
    SELECT $1, $2, $3, '{{}}', $4::jsonb, 'PENDING', 'STARTED', $5, 0, ev.currency, $6, $7, $9, $11
    FROM ev WHERE ev.on_sale AND ev.admitted AND ev.currency IS NOT NULL
    ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, user_id, event_id, seat_ids, seat_request, total_amount, currency, payment_token, created_at,
              request_id
)
SELECT ev.on_sale, ev.admitted, ev.currency IS NOT NULL AS tier_sold, c.id,
       CASE WHEN c.id IS NOT NULL THEN pg_notify($8, json_build_object(
           'id', c.id, 'user_id', c.user_id, 'event_id', c.event_id, 'seat_ids', c.seat_ids,
           'seat_request', c.seat_request, 'amount', c.total_amount, 'currency', c.currency,
           'payment_token', c.payment_token, 'created_at', c.created_at, 'event_starts_at', ev.starts_at,
           'request_id', c.request_id)::text) END AS announced
FROM (SELECT 1) AS one LEFT JOIN ev ON true LEFT JOIN created c ON true"""
# A key answers for its request for 24 h (an older one is freed by the next request using it).
SELECT_BOOKING_BY_IDEMPOTENCY_KEY = """
SELECT id, idempotency_hash FROM bookings WHERE user_id = $1 AND idempotency_key = $2
  AND created_at >= now() - interval '24 hours'"""
EXPIRE_IDEMPOTENCY_KEY = """
UPDATE bookings SET idempotency_key = NULL WHERE user_id = $1 AND idempotency_key = $2
  AND created_at < now() - interval '24 hours'"""
SELECT_BOOKING_BY_ID = f"SELECT {_BOOKING_COLUMNS} {_BOOKING_FROM} WHERE b.id = $1"
SELECT_BOOKINGS_OF_USER = f"""
SELECT {_BOOKING_COLUMNS} {_BOOKING_FROM}
WHERE b.user_id = $1 AND ($2::text IS NULL OR b.status = $2)
ORDER BY b.created_at DESC, b.id DESC
LIMIT $3 OFFSET $4"""
COUNT_BOOKINGS_OF_USER = """
SELECT count(*) FROM bookings WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)"""
SELECT_BOOKINGS_BY_IDS = f"SELECT {_BOOKING_COLUMNS} {_BOOKING_FROM} WHERE b.id = ANY($1::text[])"
# Saga progress, each statement for many bookings at once (the saga actors coalesce concurrent
# sagas' steps; arrays are pairwise). Every write is guarded by the status so that a late,
# repeated or concurrent step can never move a finished booking; each returns the ids it moved.
# The guard is written `(b.status = 'PENDING') IS TRUE` (the same, status being NOT NULL) so that
# the cached generic plan finds each row by its primary key: a plain `status = 'PENDING'` lets
# the planner scan a partial index of PENDING bookings instead, which an on-sale fills with dead
# entries faster than autovacuum clears them (10x slower, measured).
# The lock's expiry and the intent to charge in one write (SEATS_LOCKED is never persisted on
# its own: a resumed CHARGING replays the charge's idempotency key, which is safe either way).
UPDATE_BOOKINGS_CHARGING = """
UPDATE bookings b SET saga_step = 'CHARGING', lock_expires_at = u.lock_expires_at, updated_at = now()
FROM unnest($1::text[], $2::timestamptz[]) AS u(id, lock_expires_at)
WHERE b.id = u.id AND (b.status = 'PENDING') IS TRUE RETURNING b.id"""
# Best available: the seats the seat actor chose, priced from their tiers, with CHARGING and the
# lock's expiry, in one write before any charge, for many bookings at once: $1 booking ids and $2
# their lock expiries; $3/$4 the chosen seats flattened (booking id, seat id per seat, in the
# order chosen). Returns the price of each booking moved (missing: no longer PENDING, or a seat
# that is not the event's).
UPDATE_BOOKINGS_CHARGING_CHOSEN = """
WITH chosen AS (
    SELECT c.booking_id, array_agg(c.seat_id ORDER BY c.n) AS seat_ids
    FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS c(booking_id, seat_id, n)
    GROUP BY c.booking_id
), priced AS (
    SELECT ch.booking_id, ch.seat_ids, sum(t.price)::integer AS amount,
           min(t.currency) AS currency, count(*) AS seats
    FROM chosen ch
    JOIN bookings bk ON bk.id = ch.booking_id
    JOIN seats s ON s.event_id = bk.event_id AND s.seat_id = ANY(ch.seat_ids)
    JOIN ticket_tiers t ON t.event_id = s.event_id AND t.tier = s.tier
    GROUP BY ch.booking_id, ch.seat_ids
)
UPDATE bookings b SET saga_step = 'CHARGING', lock_expires_at = e.expires_at,
       seat_ids = p.seat_ids, total_amount = p.amount, currency = p.currency, updated_at = now()
FROM priced p JOIN unnest($1::text[], $2::timestamptz[]) AS e(id, expires_at)
    ON e.id = p.booking_id
WHERE b.id = p.booking_id AND (b.status = 'PENDING') IS TRUE
  AND p.seats = cardinality(p.seat_ids)
RETURNING b.id, b.total_amount, b.currency"""
UPDATE_BOOKINGS_CHARGED = """
UPDATE bookings b SET saga_step = 'CHARGED', payment_id = u.payment_id, updated_at = now()
FROM unnest($1::text[], $2::text[]) AS u(id, payment_id)
WHERE b.id = u.id AND (b.status = 'PENDING') IS TRUE RETURNING b.id"""
# A final status and its notification in one statement ($1 bookings, $2 their notification
# ids): atomic, and the email can be late but never lost.
# Tail of a final-status statement: the notifications of the bookings in `done` ($3 subject),
# and each booking's id announced on BOOKING_FINAL_CHANNEL (domain.bookings), delivered when the
# statement commits (never for a write that rolled back): the Gateway replicas wake their
# `Prefer: wait` requests from it. One small NOTIFY per booking (a batch's ids joined could pass
# the 8000-byte payload cap).
_NOTIFY_DONE = (
    """, note AS (
    INSERT INTO notifications (id, user_id, booking_id, type, subject, recipient, status)
    SELECT d.notification_id, d.user_id, d.id, '{kind}', $3, u.email, 'PENDING'
    FROM done d JOIN users u ON u.id = d.user_id
    ON CONFLICT (booking_id, type) DO NOTHING RETURNING 1
)
SELECT id, pg_notify('"""
    + _FINAL_CHANNEL
    + """', id) FROM done"""
)
CONFIRM_BOOKINGS = f"""
WITH done AS (
    UPDATE bookings b SET status = 'CONFIRMED', saga_step = 'CONFIRMED', lock_expires_at = NULL,
           confirmed_at = now(), updated_at = now()
    FROM unnest($1::text[], $2::text[]) AS n(id, notification_id)
    WHERE b.id = n.id AND (b.status = 'PENDING') IS TRUE RETURNING b.id, b.user_id, n.notification_id
){_NOTIFY_DONE.format(kind="BOOKING_CONFIRMED")}"""
# FAILED holds no seats, even if a reserve raced the failure ($4 the failure reasons, $5 their
# messages, NULL but for a best-available request that found no seats).
FAIL_BOOKINGS = f"""
WITH done AS (
    UPDATE bookings b SET status = 'FAILED', saga_step = 'FAILED', failure_reason = n.reason,
           failure_message = n.message, lock_expires_at = NULL, failed_at = now(), updated_at = now()
    FROM unnest($1::text[], $2::text[], $4::text[], $5::text[]) AS n(id, notification_id, reason, message)
    WHERE b.id = n.id AND (b.status = 'PENDING') IS TRUE RETURNING b.id, b.user_id, n.notification_id
), released AS (
    UPDATE seat_sales SET released_at = now()
    WHERE booking_id IN (SELECT id FROM done) AND released_at IS NULL RETURNING 1
){_NOTIFY_DONE.format(kind="BOOKING_FAILED")}"""
SELECT_STALE_PENDING_BOOKINGS = """
SELECT id, request_id FROM bookings
WHERE status = 'PENDING' AND (saga_slot = $1 OR ($1 = 0 AND saga_slot >= $2))
  AND updated_at < $3
ORDER BY updated_at LIMIT $4"""

# -- cancellations (a workflow driven by the booking's saga actor) -------------------------------
# The intent, before any money moves ($1 booking): a CONFIRMED booking's saga step becomes
# CANCELLING and its open cancellation is written, in one statement; a repeat (a retried or
# concurrent request) writes nothing new. Returns whether the booking was CONFIRMED.
REQUEST_CANCELLATION = """
WITH b AS (
    UPDATE bookings SET saga_step = 'CANCELLING', updated_at = now()
    WHERE id = $1 AND status = 'CONFIRMED' RETURNING id, saga_slot
), c AS (
    INSERT INTO booking_cancellations (booking_id, saga_slot, step)
    SELECT id, saga_slot, 'REFUNDING' FROM b
    ON CONFLICT (booking_id) DO NOTHING RETURNING booking_id
)
SELECT EXISTS (SELECT 1 FROM b) AS confirmed"""
SELECT_CANCELLATION = """
SELECT c.booking_id, c.step, b.event_id, b.payment_id, b.cancelled_at
FROM booking_cancellations c JOIN bookings b ON b.id = c.booking_id
WHERE c.booking_id = $1"""
# After the refund ($1 booking, $2 notification id, $3 subject): CANCELLED, the sale released,
# the cancellation moved on to releasing the seat actor's copy, and the notification, atomically.
# Guarded by CONFIRMED, so a repeat changes nothing; returns cancelled_at when it moved.
CANCEL_BOOKING = """
WITH done AS (
    UPDATE bookings SET status = 'CANCELLED', saga_step = 'CANCELLED', cancelled_at = now(),
           updated_at = now()
    WHERE id = $1 AND status = 'CONFIRMED' RETURNING id, user_id, cancelled_at
), released AS (
    UPDATE seat_sales SET released_at = now()
    WHERE booking_id IN (SELECT id FROM done) AND released_at IS NULL RETURNING 1
), step AS (
    UPDATE booking_cancellations SET step = 'RELEASING', updated_at = now()
    WHERE booking_id IN (SELECT id FROM done) RETURNING 1
), note AS (
    INSERT INTO notifications (id, user_id, booking_id, type, subject, recipient, status)
    SELECT $2, d.user_id, d.id, 'BOOKING_CANCELLED', $3, u.email, 'PENDING'
    FROM done d JOIN users u ON u.id = d.user_id
    ON CONFLICT (booking_id, type) DO NOTHING RETURNING 1
)
SELECT cancelled_at FROM done"""
FINISH_CANCELLATION = """
UPDATE booking_cancellations SET step = 'DONE', finished_at = now(), updated_at = now()
WHERE booking_id = $1 AND step = 'RELEASING'"""
# Open cancellations of a saga slot not moved since $3 (slot 0 also takes slots >= $2, the pool
# size, as SELECT_STALE_PENDING_BOOKINGS does).
SELECT_STALE_CANCELLATIONS = """
SELECT booking_id FROM booking_cancellations
WHERE step <> 'DONE' AND (saga_slot = $1 OR ($1 = 0 AND saga_slot >= $2)) AND updated_at < $3
ORDER BY updated_at LIMIT $4"""

# -- payments -----------------------------------------------------------------------------------
_PAYMENT_COLUMNS = """
id, booking_id, user_id, amount, currency, status, provider, provider_transaction_id,
decline_code, refund_id, idempotency_key, created_at, processed_at, refunded_at"""
# Many charge attempts at once (arrays pairwise, $6 the provider): a key already recorded
# inserts nothing and is read back by SELECT_PAYMENTS_BY_KEYS.
INSERT_PAYMENTS = f"""
INSERT INTO payments (id, booking_id, user_id, amount, currency, status, provider, idempotency_key)
SELECT u.id, u.booking_id, u.user_id, u.amount, u.currency, 'PROCESSING', $6, u.idempotency_key
FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::text[], $7::text[])
     AS u(id, booking_id, user_id, amount, currency, idempotency_key)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING {_PAYMENT_COLUMNS}"""
SELECT_PAYMENTS_BY_KEYS = (
    f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE idempotency_key = ANY($1::text[])"
)
SELECT_PAYMENT_BY_KEY = f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE idempotency_key = $1"
SELECT_PAYMENT_BY_ID = f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE id = $1"
SELECT_PAYMENT_OF_BOOKING = f"""
SELECT {_PAYMENT_COLUMNS} FROM payments WHERE booking_id = $1
ORDER BY (status IN ('SUCCESS', 'REFUNDED')) DESC, created_at DESC LIMIT 1"""
UPDATE_PAYMENT_OUTCOMES = """
UPDATE payments p SET status = u.status, provider_transaction_id = u.provider_transaction_id,
       decline_code = u.decline_code, processed_at = now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
     AS u(id, status, provider_transaction_id, decline_code)
WHERE p.id = u.id AND p.status = 'PROCESSING'"""
UPDATE_PAYMENT_REFUNDED = f"""
UPDATE payments SET status = 'REFUNDED', refund_id = $2, refunded_at = now()
WHERE id = $1 AND status = 'SUCCESS'
RETURNING {_PAYMENT_COLUMNS}"""

# Charges whose outcome was never recorded (older than $1), and successful charges of bookings
# that failed: the payment actor settles both, so no money is kept for a seat not delivered.
SELECT_PAYMENTS_TO_RECONCILE = """
SELECT p.id, p.booking_id, p.user_id, p.amount, p.currency, p.status, p.idempotency_key,
       b.payment_token, b.status AS booking_status
FROM payments p JOIN bookings b ON b.id = p.booking_id
WHERE (p.status = 'PROCESSING' AND p.created_at < $1)
   OR (p.status = 'SUCCESS' AND b.status = 'FAILED')
ORDER BY p.created_at LIMIT $2"""

# -- notifications ------------------------------------------------------------------------------
SELECT_DUE_NOTIFICATIONS = """
SELECT n.id, n.type, n.recipient, n.attempts, n.booking_id, b.request_id,
       u.name AS user_name, b.seat_ids, b.total_amount, b.currency, b.failure_reason,
       e.name AS event_name, e.starts_at AS event_date, v.name AS venue_name
FROM notifications n
JOIN users u ON u.id = n.user_id
JOIN bookings b ON b.id = n.booking_id
JOIN events e ON e.id = b.event_id
JOIN venues v ON v.id = e.venue_id
WHERE n.status = 'PENDING' AND n.next_attempt_at <= now()
ORDER BY n.next_attempt_at LIMIT $1"""
UPDATE_NOTIFICATIONS_SENT = """
UPDATE notifications SET status = 'SENT', sent_at = now(), attempts = attempts + 1, last_error = NULL
WHERE id = ANY($1::text[]) AND status = 'PENDING'"""
UPDATE_NOTIFICATION_RETRY = """
UPDATE notifications SET attempts = attempts + 1, last_error = $2,
       next_attempt_at = now() + make_interval(secs => $3)
WHERE id = $1 AND status = 'PENDING'"""
UPDATE_NOTIFICATION_GAVE_UP = """
UPDATE notifications SET status = 'FAILED', attempts = attempts + 1, last_error = $2
WHERE id = $1 AND status = 'PENDING'"""
# Only what was sent: a queued or given-up notification has no sent_at to show.
SELECT_RECENT_NOTIFICATIONS = """
SELECT id, type, subject, sent_at, created_at, booking_id, status FROM notifications
WHERE user_id = $1 AND status = 'SENT' AND sent_at IS NOT NULL
ORDER BY sent_at DESC, id DESC LIMIT 20"""
