CREATE TABLE venues (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    address    text NOT NULL,
    city       text NOT NULL,
    country    char(2) NOT NULL,
    capacity   integer NOT NULL CHECK (capacity > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    id          text PRIMARY KEY,
    venue_id    text NOT NULL REFERENCES venues (id),
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX events_starts_at_idx ON events (starts_at, id);
CREATE INDEX events_venue_idx ON events (venue_id, starts_at);

CREATE TABLE ticket_tiers (
    event_id text NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    tier     text NOT NULL,
    position integer NOT NULL,
    price    integer NOT NULL CHECK (price > 0),
    currency char(3) NOT NULL,
    capacity integer NOT NULL CHECK (capacity > 0),
    PRIMARY KEY (event_id, tier)
);

CREATE TABLE seats (
    event_id  text NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    seat_id   text NOT NULL,
    row_label text NOT NULL,
    number    integer NOT NULL CHECK (number > 0),
    tier      text NOT NULL,
    position  integer NOT NULL,
    PRIMARY KEY (event_id, seat_id),
    FOREIGN KEY (event_id, tier) REFERENCES ticket_tiers (event_id, tier) ON DELETE CASCADE
);
CREATE INDEX seats_order_idx ON seats (event_id, position);
