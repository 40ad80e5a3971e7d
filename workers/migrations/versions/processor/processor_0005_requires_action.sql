-- processor 0005: a payment waiting for its customer (3-D Secure) is requires_action until the
-- gateway reports its outcome or the wait ends; the attempts record the gateway's reports and
-- the cancel that ends a wait.

ALTER TABLE processor.payments DROP CONSTRAINT processor_payments_state_known;
ALTER TABLE processor.payments ADD CONSTRAINT processor_payments_state_known CHECK (state IN
    ('initiated', 'processing', 'requires_action', 'requires_capture', 'succeeded', 'failed',
     'canceled', 'refunded'));

ALTER TABLE processor.attempts DROP CONSTRAINT attempts_kind_check;
ALTER TABLE processor.attempts ADD CONSTRAINT attempts_kind_check
    CHECK (kind IN ('charge', 'lookup', 'refund', 'reversal', 'cancel', 'report'));
