-- api 0005: a payment waiting for its customer (3-D Secure): the status requires_action, and
-- next_action (what the customer must do, in Stripe's shape) on the payment and on each change
-- recorded for the event stream.

ALTER TABLE api.payments DROP CONSTRAINT payments_status_known;
ALTER TABLE api.payments ADD CONSTRAINT payments_status_known CHECK (status IN
    ('initiated', 'processing', 'requires_action', 'requires_capture', 'succeeded', 'failed',
     'canceled', 'refunded'));

ALTER TABLE api.payments ADD COLUMN next_action jsonb;
ALTER TABLE api.payment_changes ADD COLUMN next_action jsonb;

CREATE OR REPLACE FUNCTION api.record_payment_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    INSERT INTO api.payment_changes
        (payment_id, version, status, refunded_amount, failure_reason, changed_at,
         amount_capturable, amount_received, cancellation_reason, next_action)
    VALUES (NEW.id, NEW.version, NEW.status, NEW.refunded_amount, NEW.failure_reason,
            NEW.updated_at, NEW.amount_capturable, NEW.amount_received, NEW.cancellation_reason,
            NEW.next_action);
    PERFORM pg_notify('flowpay_payment_changes', NEW.id);
    RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER payments_record_change BEFORE UPDATE ON api.payments FOR EACH ROW
    WHEN ((OLD.status, OLD.refunded_amount, OLD.failure_reason, OLD.amount_capturable,
           OLD.amount_received, OLD.cancellation_reason, OLD.next_action)
          IS DISTINCT FROM (NEW.status, NEW.refunded_amount, NEW.failure_reason,
                            NEW.amount_capturable, NEW.amount_received, NEW.cancellation_reason,
                            NEW.next_action))
    EXECUTE FUNCTION api.record_payment_change();
