-- The `auto` admission rate reads the shop's error share (issue 15; domain/admission_rate.py):
-- every second the admitter counts each room event's bookings that failed on the shop's account
-- (LOCK_EXPIRED, INTERNAL_ERROR) in the last few seconds. Without an index that count reads every
-- booking of the event (bookings_event_idx holds PENDING ones only), on the sale's hottest table.
--
-- Partial, so it holds those failures only: a booking enters it once, by the update that makes it
-- FAILED (which changes `status`, already in other indexes' predicates, so that update was never
-- heap-only anyway); no other write touches `failed_at` or `failure_reason`, so saga step
-- updates stay HOT (0004). Built in the migration's transaction, like 0004: writes to bookings
-- wait for the build, which reads the table once (run migrations before the deploy, not mid-sale).
CREATE INDEX bookings_shop_failures_idx ON bookings (event_id, failed_at)
    WHERE status = 'FAILED' AND failure_reason IN ('LOCK_EXPIRED', 'INTERNAL_ERROR');
