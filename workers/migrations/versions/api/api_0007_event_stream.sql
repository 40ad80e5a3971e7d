-- api 0006: the merchant-wide event stream (GET /v1/events/stream).

-- Each event's place in commit order: the transaction that recorded it, then its order in that
-- transaction. A stream reads only events of transactions older than every one still running
-- (pg_snapshot_xmin), so no event can still appear behind its cursor.
ALTER TABLE api.events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE api.events ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
CREATE INDEX events_in_commit_order ON api.events (merchant_id, tx, seq);

-- Streams are woken per merchant (NOTIFY flowpay_merchant_events, payload = merchant id), once
-- per merchant and statement however many of its events the statement records.
CREATE OR REPLACE FUNCTION api.notify_merchant_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flowpay_merchant_events', merchant_id)
    FROM (SELECT DISTINCT merchant_id FROM recorded) AS m;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER events_notify_merchants AFTER INSERT ON api.events
    REFERENCING NEW TABLE AS recorded FOR EACH STATEMENT
    EXECUTE FUNCTION api.notify_merchant_events();
