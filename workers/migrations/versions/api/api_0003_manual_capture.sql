-- api 0003: manual capture and cancel, as Stripe's PaymentIntents. A payment's capture method,
-- what of it may still be captured and what was received, and why it was canceled; the two new
-- statuses; and each change's record (for the event stream) with the new amounts.

ALTER TABLE api.payments DROP CONSTRAINT payments_status_known;
ALTER TABLE api.payments ADD CONSTRAINT payments_status_known CHECK (status IN
    ('initiated', 'processing', 'requires_capture', 'succeeded', 'failed', 'canceled', 'refunded'));

ALTER TABLE api.payments ADD COLUMN capture_method text NOT NULL DEFAULT 'automatic'
    CONSTRAINT payments_capture_method_known CHECK (capture_method IN ('automatic', 'manual'));
ALTER TABLE api.payments ADD COLUMN amount_capturable bigint NOT NULL DEFAULT 0
    CONSTRAINT payments_capturable_range CHECK (amount_capturable >= 0 AND amount_capturable <= amount);
ALTER TABLE api.payments ADD COLUMN amount_received bigint NOT NULL DEFAULT 0
    CONSTRAINT payments_received_range CHECK (amount_received >= 0 AND amount_received <= amount);
ALTER TABLE api.payments ADD COLUMN cancellation_reason text
    CONSTRAINT payments_cancellation_reason_known CHECK (cancellation_reason IN
        ('duplicate', 'fraudulent', 'requested_by_customer', 'abandoned', 'expired'));

ALTER TABLE api.payment_changes ADD COLUMN amount_capturable bigint NOT NULL DEFAULT 0;
ALTER TABLE api.payment_changes ADD COLUMN amount_received bigint NOT NULL DEFAULT 0;
ALTER TABLE api.payment_changes ADD COLUMN cancellation_reason text;

-- Every payment that succeeded before received its whole amount (automatic capture), and so
-- did each of its recorded changes from its success on (before the trigger counts the change).
UPDATE api.payments SET amount_received = amount WHERE status IN ('succeeded', 'refunded');
UPDATE api.payment_changes c SET amount_received = p.amount
FROM api.payments p
WHERE p.id = c.payment_id AND c.status IN ('succeeded', 'refunded');

CREATE OR REPLACE FUNCTION api.record_payment_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    INSERT INTO api.payment_changes
        (payment_id, version, status, refunded_amount, failure_reason, changed_at,
         amount_capturable, amount_received, cancellation_reason)
    VALUES (NEW.id, NEW.version, NEW.status, NEW.refunded_amount, NEW.failure_reason,
            NEW.updated_at, NEW.amount_capturable, NEW.amount_received, NEW.cancellation_reason);
    PERFORM pg_notify('flowpay_payment_changes', NEW.id);
    RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER payments_record_change BEFORE UPDATE ON api.payments FOR EACH ROW
    WHEN ((OLD.status, OLD.refunded_amount, OLD.failure_reason, OLD.amount_capturable,
           OLD.amount_received, OLD.cancellation_reason)
          IS DISTINCT FROM (NEW.status, NEW.refunded_amount, NEW.failure_reason,
                            NEW.amount_capturable, NEW.amount_received, NEW.cancellation_reason))
    EXECUTE FUNCTION api.record_payment_change();
