-- Best available (issue 14): a booking may ask for a quantity of the best seats instead of naming
-- them. Its seat actor chooses and locks them when its saga starts, and the saga writes them, with
-- their price, in the same statement as the CHARGING step (before any charge). Until then the
-- booking has no seats and an amount of 0; a request that no seats could serve ends FAILED
-- (SEATS_UNAVAILABLE) with no seats and `failure_message` saying what was left.
ALTER TABLE bookings ADD COLUMN seat_request jsonb;      -- {"quantity", "tier", "together"}; NULL: seats named
ALTER TABLE bookings ADD COLUMN failure_message text;

-- The new checks are looser than the ones they replace (every existing row satisfies them), so
-- they are added NOT VALID (no table scan under an exclusive lock) and validated after, under a
-- lock that lets bookings go on.
ALTER TABLE bookings DROP CONSTRAINT bookings_seat_ids_check;
ALTER TABLE bookings ADD CONSTRAINT bookings_seat_ids_check CHECK (
    cardinality(seat_ids) BETWEEN 1 AND 10
    OR (seat_request IS NOT NULL AND cardinality(seat_ids) = 0 AND status IN ('PENDING', 'FAILED'))
) NOT VALID;
ALTER TABLE bookings DROP CONSTRAINT bookings_total_amount_check;
ALTER TABLE bookings ADD CONSTRAINT bookings_total_amount_check CHECK (
    total_amount > 0 OR (total_amount = 0 AND cardinality(seat_ids) = 0)
) NOT VALID;
ALTER TABLE bookings VALIDATE CONSTRAINT bookings_seat_ids_check;
ALTER TABLE bookings VALIDATE CONSTRAINT bookings_total_amount_check;
