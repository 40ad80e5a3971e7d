-- Shared SQL. {schema} is the emitting service's own schema.

-- name: outbox_insert
INSERT INTO {schema}.outbox (event_id, message_key, value, headers)
VALUES (%s, %s, %s, %s)
ON CONFLICT (event_id) DO NOTHING;

-- name: outbox_insert_rows
-- Many events in one statement, in the order given (each event once, as above).
INSERT INTO {schema}.outbox (event_id, message_key, value, headers)
SELECT * FROM unnest(%(event_ids)b::uuid[], %(keys)b::bytea[], %(values)b::bytea[],
                     %(headers)b::jsonb[])
ON CONFLICT (event_id) DO NOTHING;

-- name: outbox_events_of
SELECT value, published_at FROM {schema}.outbox WHERE message_key = %s ORDER BY id;

-- name: dlq_replays_of
SELECT count(*) FROM ops.dlq_replays WHERE topic = %(topic)s AND dead_letter = %(dead_letter)s;

-- name: dlq_replay_insert
INSERT INTO ops.dlq_replays (dead_letter, topic, forced) VALUES (%(dead_letter)s, %(topic)s, %(forced)s);

-- The roles' privileges (workers.core.db_roles).

-- name: roles_lock
SELECT pg_advisory_xact_lock(%(lock)s);

-- name: roles_present
SELECT rolname FROM pg_roles WHERE rolname = ANY(%(names)b::text[]) ORDER BY rolname;

-- name: schemas_present
SELECT nspname FROM pg_namespace WHERE nspname = ANY(%(names)b::text[]) ORDER BY nspname;

-- name: functions_present
SELECT f FROM unnest(%(names)b::text[]) AS f WHERE to_regprocedure(f) IS NOT NULL ORDER BY f;

-- name: grantable_tables
-- The tables of the schemas named: their columns in order, and the sequences their columns own
-- (serial and identity columns), which an INSERT needs.
SELECT n.nspname, c.relname,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum),
       ARRAY(SELECT s.oid::regclass::text FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
             WHERE d.classid = 'pg_class'::regclass AND d.refobjid = c.oid
               AND d.deptype IN ('a', 'i') AND s.relkind = 'S'
             ORDER BY 1)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(names)b::text[]) AND c.relkind IN ('r', 'p')
ORDER BY n.nspname, c.relname;

-- name: owner_adopt
-- An ALTER ... OWNER statement for each of FlowPay's schemas and objects that another user owns
-- (made before the roles). A sequence a column owns moves with its table. Run inside a DO block.
SELECT format('ALTER SCHEMA %I OWNER TO %I', nspname, {owner}) AS statement
FROM pg_namespace WHERE nspname = ANY({schemas}) AND nspowner <> to_regrole({owner})
UNION ALL
SELECT format('ALTER %s %s OWNER TO %I',
              CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                             WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
              c.oid::regclass, {owner})
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (n.nspname = ANY({schemas}) OR c.oid = to_regclass('public.alembic_version'))
  AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.relowner <> to_regrole({owner})
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
UNION ALL
SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, {owner})
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE (n.nspname = ANY({schemas})
       OR p.oid = ANY(ARRAY(SELECT to_regprocedure(f) FROM unnest({functions}) AS f)))
  AND p.proowner <> to_regrole({owner})

-- name: owner_member
-- Whether this session logs in as another member of the owner: not the owner, not a superuser.
SELECT current_user <> %(owner)s
       AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND pg_has_role(current_user, r.oid, 'MEMBER')
FROM (SELECT to_regrole(%(owner)s) AS oid) AS r;
