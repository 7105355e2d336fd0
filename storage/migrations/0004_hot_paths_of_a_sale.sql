-- What an on-sale writes most, made cheaper (docs/performance.md, "Postgres").
--
-- A booking's saga writes its row four or five times and a payment's row is written twice. An
-- update that changes no indexed column and finds room on its page is a heap-only (HOT) update:
-- no new entry in any index, and far less WAL. So the recovery sweep's index no longer holds
-- updated_at, which every saga step writes (the sweep reads its slot's PENDING bookings, few at
-- any time, and filters on updated_at), and pages of bookings and payments keep a fifth free for
-- the updates of the rows they hold.
DROP INDEX bookings_pending_idx;
CREATE INDEX bookings_pending_idx ON bookings (saga_slot) WHERE status = 'PENDING';
ALTER TABLE bookings SET (fillfactor = 80);
ALTER TABLE payments SET (fillfactor = 80);

-- Every statement that looks up a booking's sale wants its active sale only.
DROP INDEX seat_sales_booking_idx;
CREATE INDEX seat_sales_booking_idx ON seat_sales (booking_id) WHERE released_at IS NULL;
