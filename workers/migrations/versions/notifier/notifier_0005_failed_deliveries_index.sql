-- notifier 0005: failed deliveries on an index of their own. The notifier's gauges count the
-- pending and the failed deliveries every second, each on its partial index; counting every
-- delivery by status walked the whole table, which only grows.

CREATE INDEX deliveries_failed ON notifier.deliveries (id) WHERE status = 'failed';
