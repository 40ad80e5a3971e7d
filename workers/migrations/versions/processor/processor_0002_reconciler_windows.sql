-- processor 0002: when a payment left processing (the late-charge watch runs from then), and
-- refunds whose outcome is unknown, owned by the reconciler.

ALTER TABLE processor.payments ADD COLUMN settled_at timestamptz;
-- Failed payments watched since before the column: their last change stands in for the failure
-- (never earlier than it, so no watch is cut short; each then ends one window later).
UPDATE processor.payments SET settled_at = updated_at
WHERE next_check_at IS NOT NULL AND state = 'failed';

ALTER TABLE processor.refunds ADD COLUMN next_check_at timestamptz;
ALTER TABLE processor.refunds ADD COLUMN checks integer NOT NULL DEFAULT 0;
CREATE INDEX processor_refunds_due ON processor.refunds (next_check_at)
    WHERE next_check_at IS NOT NULL;
