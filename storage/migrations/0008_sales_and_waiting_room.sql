-- Sales opening and the virtual waiting room (issue 15).
--
-- `sales_start_at`: before it the event cannot be booked (409 EVENT_NOT_ON_SALE, checked inside
-- the booking insert); NULL: on sale from its creation. `waiting_room`: bookings need an
-- admission token from the event's queue (403 ADMISSION_REQUIRED, also inside the insert).
-- `admit_per_minute`: the room's admission rate; NULL: "auto" (docs/waiting-room.md).
-- Nullable columns and a constant default: adding them rewrites no row.
ALTER TABLE events ADD COLUMN sales_start_at timestamptz;
ALTER TABLE events ADD COLUMN waiting_room boolean NOT NULL DEFAULT false;
ALTER TABLE events ADD COLUMN admit_per_minute integer
    CHECK (admit_per_minute BETWEEN 1 AND 1000000);
-- The API refuses it first (400); this is the backstop. Every existing row has NULL.
ALTER TABLE events ADD CONSTRAINT events_sales_start_before_start
    CHECK (sales_start_at IS NULL OR sales_start_at < starts_at);
-- The admitter's every-second scan: only events with a room on, which are few.
CREATE INDEX events_waiting_room_idx ON events (starts_at) WHERE waiting_room;
