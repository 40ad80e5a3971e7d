-- notifier 0005: failed deliveries on an index of their own. The notifier's gauges count the
-- pending and the failed deliveries every second, each on its partial index; counting every
-- delivery by status walked the whole table, which only grows.
-- CREATE INDEX (not CONCURRENTLY: a migration runs in one transaction) blocks writes to
-- notifier.deliveries while it builds. Where that table is large, build the index first with
-- CREATE INDEX CONCURRENTLY (same name and definition): this step then leaves it as it is.

CREATE INDEX IF NOT EXISTS deliveries_failed ON notifier.deliveries (id) WHERE status = 'failed';
