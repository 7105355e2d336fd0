-- Money and seats (issue 12, items 1 and 3).
--
-- A cancellation is a persisted, resumable workflow: its intent is written before the refund,
-- and the booking's saga actor drives it to the end (refund -> CANCELLED and the sale released
-- -> the seat actor's copy released), resumed by its recovery sweep after any crash. It lives
-- in a table of its own rather than in a status of bookings: the sweep finds open ones through
-- a small partial index here, and the bookings row keeps the indexes the booking hot path was
-- tuned for (0004): no index or predicate on bookings.saga_step, so saga step writes stay HOT.
CREATE TABLE booking_cancellations (
    booking_id   text PRIMARY KEY REFERENCES bookings (id),
    saga_slot    integer NOT NULL,
    -- REFUNDING: the booking is still CONFIRMED (saga_step CANCELLING) and its charge is being
    -- refunded with key <bookingId>:refund; RELEASING: the booking is CANCELLED and its sale
    -- released in Postgres, the live seat actor's copy not yet; DONE.
    step         text NOT NULL CHECK (step IN ('REFUNDING', 'RELEASING', 'DONE')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX booking_cancellations_open_idx ON booking_cancellations (saga_slot) WHERE step <> 'DONE';

-- The Idempotency-Key's request: a hash of the canonical body it was first used with, so that
-- the same key with a different body is refused instead of answered with the first booking.
-- NULL for bookings written before this migration (their keys match any body, as before).
ALTER TABLE bookings ADD COLUMN idempotency_hash text;
