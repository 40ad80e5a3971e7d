-- ops 0001, the baseline: the ops schema as schema.sql made it before migrations.
-- Every statement is idempotent, so that a database made by an earlier `flowpay db init` (which
-- applied schema.sql) adopts this history: what it lacks is added, what it holds is kept. Later
-- changes are new numbered migrations, never edits here.

CREATE SCHEMA IF NOT EXISTS ops;

CREATE TABLE IF NOT EXISTS ops.dlq_replays (
    dead_letter text        NOT NULL,  -- "<partition>:<offset>" in the dead-letter topic
    topic       text        NOT NULL,  -- the dead-letter topic's name
    replayed_at timestamptz NOT NULL DEFAULT now(),
    forced      boolean     NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS dlq_replays_by_letter ON ops.dlq_replays (topic, dead_letter);
