-- notifier 0002: why an endpoint is disabled and since when it fails (automatic disabling), and
-- the indexes of the claim that takes endpoints in turn and counts each one's live leases.

ALTER TABLE notifier.endpoints ADD COLUMN disabled_reason text
    CONSTRAINT endpoints_disabled_reason_known CHECK (disabled_reason IN ('gone', 'failing', 'operator'));
ALTER TABLE notifier.endpoints ADD COLUMN failing_since timestamptz;
-- Endpoints disabled before the column were disabled for answering 410 Gone.
UPDATE notifier.endpoints SET disabled_reason = 'gone' WHERE status = 'disabled';

CREATE INDEX deliveries_due_by_endpoint
    ON notifier.deliveries (endpoint_id, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON notifier.deliveries (endpoint_id)
    WHERE status = 'pending' AND leased_until IS NOT NULL;
