-- The saga orchestrator's statements (workers/orchestrator/store.py).

-- name: sagas_lock
-- The instances of these payments, each with its current step, locked until the batch commits.
SELECT s.id, s.definition, s.type, s.subject, s.reference, s.merchant_id, s.correlation_id,
       s.state, s.step, s.completed, s.context, s.outcome,
       st.seq, st.name, st.compensation, st.command_type, st.command_id, st.attempts,
       st.entered_at, st.sent_at, st.answer_id, st.answer_type, st.answered_at
FROM orchestrator.sagas s
JOIN orchestrator.steps st ON st.saga_id = s.id AND st.seq = s.step_seq
WHERE s.subject = ANY(%(subjects)s)
ORDER BY s.id
FOR UPDATE OF s;

-- name: events_seen
SELECT event_id FROM orchestrator.events WHERE event_id = ANY(%(ids)s);

-- name: event_insert
-- No ON CONFLICT: an event heard twice at once (a rebalance overlap) fails the second
-- transaction, whose retry finds it seen.
INSERT INTO orchestrator.events (event_id, type, subject, saga_id, effect, detail, occurred_at)
VALUES (%s, %s, %s, %s, %s, %s, %s);

-- name: saga_upsert
INSERT INTO orchestrator.sagas AS s
    (id, type, definition, subject, reference, merchant_id, correlation_id, state, step,
     step_seq, completed, context, outcome, updated_at, ended_at)
VALUES (%(id)s, %(type)s, %(definition)s, %(subject)s, %(reference)s, %(merchant_id)s,
        %(correlation_id)s, %(state)s, %(step)s, %(step_seq)s, %(completed)s, %(context)s,
        %(outcome)s, %(now)s, CASE WHEN %(outcome)s::text IS NULL THEN NULL ELSE %(now)s END)
ON CONFLICT (id) DO UPDATE SET
    state = EXCLUDED.state, step = EXCLUDED.step, step_seq = EXCLUDED.step_seq,
    completed = EXCLUDED.completed, context = EXCLUDED.context, outcome = EXCLUDED.outcome,
    updated_at = EXCLUDED.updated_at, ended_at = EXCLUDED.ended_at;

-- name: step_upsert
INSERT INTO orchestrator.steps
    (saga_id, seq, name, compensation, command_type, command_id, attempts, entered_at, sent_at,
     answer_id, answer_type, answered_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (saga_id, seq) DO UPDATE SET
    command_id = EXCLUDED.command_id, attempts = EXCLUDED.attempts, sent_at = EXCLUDED.sent_at,
    answer_id = EXCLUDED.answer_id, answer_type = EXCLUDED.answer_type,
    answered_at = EXCLUDED.answered_at;

-- name: timers_disarm
UPDATE orchestrator.timers SET status = 'canceled', settled_at = %(now)s
WHERE saga_id = ANY(%(ids)s) AND status = 'armed';

-- name: timer_arm
INSERT INTO orchestrator.timers (saga_id, step_seq, action, due_at, armed_at)
VALUES (%s, %s, %s, %s, %s);

-- name: timers_claim
-- Due timers and their sagas, both locked; a saga an event batch holds is skipped (its timer
-- stays armed for the next look), so the two never wait on each other.
SELECT t.id AS timer_id, t.step_seq AS timer_step_seq, t.action,
       s.id, s.definition, s.type, s.subject, s.reference, s.merchant_id, s.correlation_id,
       s.state, s.step, s.completed, s.context, s.outcome,
       st.seq, st.name, st.compensation, st.command_type, st.command_id, st.attempts,
       st.entered_at, st.sent_at, st.answer_id, st.answer_type, st.answered_at
FROM orchestrator.timers t
JOIN orchestrator.sagas s ON s.id = t.saga_id
JOIN orchestrator.steps st ON st.saga_id = s.id AND st.seq = s.step_seq
WHERE t.status = 'armed' AND t.due_at <= %(now)s
ORDER BY t.due_at
LIMIT %(limit)s
FOR UPDATE OF t, s SKIP LOCKED;

-- name: timers_fired
UPDATE orchestrator.timers SET status = 'fired', settled_at = %(now)s WHERE id = ANY(%(ids)s);

-- name: sagas_list
SELECT id, type, definition, subject, reference, state, step, outcome, created_at, updated_at
FROM orchestrator.sagas
WHERE (%(state)s::text IS NULL OR state = %(state)s)
  AND (%(type)s::text IS NULL OR type = %(type)s)
ORDER BY created_at DESC, id
LIMIT %(limit)s;

-- name: saga_get
SELECT id, type, definition, subject, reference, merchant_id, state, step, completed, context,
       outcome, created_at, updated_at, ended_at
FROM orchestrator.sagas WHERE id = %(id)s;

-- name: sagas_of_subject
SELECT id FROM orchestrator.sagas WHERE subject = %(subject)s ORDER BY created_at, id;

-- name: saga_steps
SELECT seq, name, compensation, command_type, command_id, attempts, entered_at, sent_at,
       answer_id, answer_type, answered_at
FROM orchestrator.steps WHERE saga_id = %(id)s ORDER BY seq;

-- name: saga_timers
SELECT id, step_seq, action, due_at, armed_at, status, settled_at
FROM orchestrator.timers WHERE saga_id = %(id)s ORDER BY id;
