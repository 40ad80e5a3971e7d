-- processor 0008: a payout the gateway took but has not paid yet (Stripe: pending, in_transit;
-- paid days later) is recorded in_transit with the gateway's id, settled later by the gateway's
-- report (payout.paid, payout.failed) or by the reconciler's look-up (a bounded number, on the
-- re-check schedule). A payment records its capture method: a manual one waiting for its
-- customer (3-D Secure) goes on to requires_capture, an automatic one never does.

ALTER TABLE processor.payouts DROP CONSTRAINT payouts_status_check;
ALTER TABLE processor.payouts ADD CONSTRAINT processor_payouts_status_known
    CHECK (status IN ('in_transit', 'paid', 'failed'));
ALTER TABLE processor.payouts DROP CONSTRAINT processor_payouts_paid_at_the_gateway;
ALTER TABLE processor.payouts ADD CONSTRAINT processor_payouts_paid_at_the_gateway
    CHECK (status = 'failed' OR gateway_payout_id IS NOT NULL);
ALTER TABLE processor.payouts ADD COLUMN correlation_id text;
ALTER TABLE processor.payouts ADD COLUMN next_check_at timestamptz;
ALTER TABLE processor.payouts ADD COLUMN checks integer NOT NULL DEFAULT 0;
ALTER TABLE processor.payouts ADD COLUMN settled_at timestamptz;
UPDATE processor.payouts SET settled_at = created_at;
CREATE INDEX processor_payouts_due ON processor.payouts (next_check_at)
    WHERE next_check_at IS NOT NULL;

ALTER TABLE processor.payments ADD COLUMN capture_method text NOT NULL DEFAULT 'automatic'
    CONSTRAINT processor_payments_capture_method_known
    CHECK (capture_method IN ('automatic', 'manual'));
-- Manual payments were recorded by their authorization alone (the processor's commands).
UPDATE processor.payments p SET capture_method = 'manual'
WHERE EXISTS (SELECT 1 FROM processor.commands c
              WHERE c.payment_id = p.payment_id AND c.type = 'payment.authorize');
