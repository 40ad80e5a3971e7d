-- processor 0003: the statuses of manual capture (requires_capture, canceled), which the
-- processor takes on once it executes the orchestrator's commands.

ALTER TABLE processor.payments DROP CONSTRAINT processor_payments_state_known;
ALTER TABLE processor.payments ADD CONSTRAINT processor_payments_state_known CHECK (state IN
    ('initiated', 'processing', 'requires_capture', 'succeeded', 'failed', 'canceled', 'refunded'));
