-- processor 0006: what a manual capture took, beside the amount the payment was made for (as
-- Stripe keeps ``amount`` and ``amount_received``): a partial capture no longer overwrites the
-- amount. Refunds are bounded by what was received.

ALTER TABLE processor.payments
    ADD COLUMN amount_received bigint CONSTRAINT processor_payments_received_range
        CHECK (amount_received > 0 AND amount_received <= amount);

ALTER TABLE processor.payments
    DROP CONSTRAINT processor_payments_refund_range,
    ADD CONSTRAINT processor_payments_refund_range
        CHECK (refunded_amount >= 0 AND refunded_amount <= coalesce(amount_received, amount)),
    DROP CONSTRAINT processor_payments_fully_refunded,
    ADD CONSTRAINT processor_payments_fully_refunded
        CHECK (state <> 'refunded' OR refunded_amount = coalesce(amount_received, amount));
