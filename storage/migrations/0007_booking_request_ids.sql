-- Actor wiring (issue 13, item 1): the request id of the HTTP request that created a booking.
--
-- The booking's saga starts from its insert's announcement, with no actor call on the request
-- path, so the request id travels with the row: in the announcement, to the saga actor (and from
-- it to the payment actor), and to the notifier, which reads it with the booking's notification.
-- One booking's log lines then join up from the route to the e-mail. Nullable, no default: adding
-- it rewrites nothing, and rows written before it simply have none.
ALTER TABLE bookings ADD COLUMN request_id text;
