CREATE TABLE bookings (
    id              text PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users (id),
    event_id        text NOT NULL REFERENCES events (id),
    seat_ids        text[] NOT NULL CHECK (cardinality(seat_ids) BETWEEN 1 AND 10),
    status          text NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'FAILED', 'CANCELLED')),
    -- where the saga stands; each step is written before the next begins
    saga_step       text NOT NULL,
    saga_slot       integer NOT NULL,
    failure_reason  text CHECK (failure_reason IN ('SEATS_UNAVAILABLE', 'PAYMENT_DECLINED', 'LOCK_EXPIRED', 'INTERNAL_ERROR')),
    total_amount    integer NOT NULL CHECK (total_amount > 0),
    currency        char(3) NOT NULL,
    payment_token   text NOT NULL,
    payment_id      text,
    lock_expires_at timestamptz,
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    confirmed_at    timestamptz,
    failed_at       timestamptz,
    cancelled_at    timestamptz,
    CHECK ((status = 'FAILED') = (failure_reason IS NOT NULL))
);
CREATE INDEX bookings_user_idx ON bookings (user_id, created_at DESC);
CREATE INDEX bookings_event_idx ON bookings (event_id) WHERE status = 'PENDING';
CREATE INDEX bookings_pending_idx ON bookings (saga_slot, updated_at) WHERE status = 'PENDING';
CREATE UNIQUE INDEX bookings_idempotency_key ON bookings (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The record of sold seats. The partial unique index is the last guard against overselling:
-- whatever the application does, one seat of one event is held by at most one active sale.
CREATE TABLE seat_sales (
    event_id    text NOT NULL,
    seat_id     text NOT NULL,
    booking_id  text NOT NULL REFERENCES bookings (id),
    sold_at     timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz,
    FOREIGN KEY (event_id, seat_id) REFERENCES seats (event_id, seat_id)
);
CREATE UNIQUE INDEX seat_sales_active_key ON seat_sales (event_id, seat_id) WHERE released_at IS NULL;
CREATE INDEX seat_sales_booking_idx ON seat_sales (booking_id);

CREATE TABLE payments (
    id                      text PRIMARY KEY,
    booking_id              text NOT NULL REFERENCES bookings (id),
    user_id                 text NOT NULL REFERENCES users (id),
    amount                  integer NOT NULL CHECK (amount > 0),
    currency                char(3) NOT NULL,
    status                  text NOT NULL CHECK (status IN ('PROCESSING', 'SUCCESS', 'FAILED', 'REFUNDED')),
    provider                text NOT NULL,
    provider_transaction_id text,
    decline_code            text,
    refund_id               text,
    idempotency_key         text NOT NULL UNIQUE,
    created_at              timestamptz NOT NULL DEFAULT now(),
    processed_at            timestamptz,
    refunded_at             timestamptz
);
CREATE INDEX payments_booking_idx ON payments (booking_id, created_at DESC);

CREATE TABLE notifications (
    id              text PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users (id),
    booking_id      text REFERENCES bookings (id),
    type            text NOT NULL CHECK (type IN ('BOOKING_CONFIRMED', 'BOOKING_FAILED', 'BOOKING_CANCELLED')),
    subject         text NOT NULL,
    recipient       text NOT NULL,
    status          text NOT NULL CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (booking_id, type)
);
CREATE INDEX notifications_user_idx ON notifications (user_id, created_at DESC);
CREATE INDEX notifications_due_idx ON notifications (next_attempt_at) WHERE status = 'PENDING';
