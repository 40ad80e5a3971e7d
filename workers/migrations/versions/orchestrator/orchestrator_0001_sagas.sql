-- orchestrator 0001: the saga orchestrator's own schema (workers/orchestrator). Each saga
-- instance is one row of sagas (where it stands); its history is its steps (each command sent
-- and the event that answered it), its timers and the events it heard.

CREATE SCHEMA IF NOT EXISTS orchestrator;

CREATE TABLE orchestrator.sagas (
    id             text        PRIMARY KEY,
    type           text        NOT NULL CONSTRAINT sagas_type_known CHECK (type IN ('payment', 'refund')),
    -- Which declared saga it runs (workers/orchestrator/sagas.py).
    definition     text        NOT NULL,
    -- The payment it is about: its commands' Kafka key.
    subject        text        NOT NULL,
    -- What tells a subject's sagas of one type apart: '' for a payment, a refund's id.
    reference      text        NOT NULL DEFAULT '',
    merchant_id    text        NOT NULL,
    correlation_id text        NOT NULL,
    state          text        NOT NULL CONSTRAINT sagas_state_known
                               CHECK (state IN ('running', 'waiting', 'compensating', 'done', 'failed')),
    -- The step it is at, and that step's number in its history (steps.seq).
    step           text        NOT NULL,
    step_seq       integer     NOT NULL CHECK (step_seq > 0),
    -- Its steps completed so far, in order: compensations run back from the last.
    completed      text[]      NOT NULL DEFAULT '{}',
    -- What its commands are built from (amounts, the reason of a cancel, ...).
    context        jsonb       NOT NULL,
    -- How it ended: succeeded, failed, canceled, refunded, refund_failed.
    outcome        text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    ended_at       timestamptz,
    CONSTRAINT sagas_one_per_reference UNIQUE (subject, type, reference),
    CONSTRAINT sagas_ended_with_outcome CHECK ((state IN ('done', 'failed')) = (outcome IS NOT NULL))
);
CREATE INDEX sagas_by_state ON orchestrator.sagas (state, id);

-- Every step a saga entered, in order: the command it sent (its latest attempt) and the event
-- that answered it. A wait (no command) is answered by a merchant's request; a compensation
-- undoes a step that completed.
CREATE TABLE orchestrator.steps (
    saga_id      text        NOT NULL REFERENCES orchestrator.sagas (id),
    seq          integer     NOT NULL CHECK (seq > 0),
    name         text        NOT NULL,
    compensation boolean     NOT NULL DEFAULT false,
    command_type text,
    command_id   uuid,
    attempts     integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    entered_at   timestamptz NOT NULL,
    sent_at      timestamptz,
    answer_id    uuid,
    answer_type  text,
    answered_at  timestamptz,
    CONSTRAINT steps_pkey PRIMARY KEY (saga_id, seq),
    CONSTRAINT steps_command_whole CHECK ((command_type IS NULL) = (command_id IS NULL))
);

-- A step's timeout, in the database so that it survives restarts: the timer loop claims due
-- ones with FOR UPDATE SKIP LOCKED (several orchestrators never fire one twice). At most one
-- is armed per saga.
CREATE TABLE orchestrator.timers (
    id         bigserial   PRIMARY KEY,
    saga_id    text        NOT NULL REFERENCES orchestrator.sagas (id),
    step_seq   integer     NOT NULL,
    -- What firing does: send the step's command again, or compensate (an authorization expired).
    action     text        NOT NULL CONSTRAINT timers_action_known CHECK (action IN ('resend', 'compensate')),
    due_at     timestamptz NOT NULL,
    armed_at   timestamptz NOT NULL,
    status     text        NOT NULL DEFAULT 'armed'
                           CONSTRAINT timers_status_known CHECK (status IN ('armed', 'fired', 'canceled')),
    settled_at timestamptz,
    CONSTRAINT timers_settled_unless_armed CHECK ((status = 'armed') = (settled_at IS NULL))
);
CREATE INDEX timers_due ON orchestrator.timers (due_at) WHERE status = 'armed';
CREATE UNIQUE INDEX timers_one_armed ON orchestrator.timers (saga_id) WHERE status = 'armed';
CREATE INDEX timers_by_saga ON orchestrator.timers (saga_id, id);

-- Every event the orchestrator consumed, once (a clash on event_id means "already done"), and
-- what it did with it: the history of what each saga heard.
CREATE TABLE orchestrator.events (
    event_id    uuid        PRIMARY KEY,
    type        text        NOT NULL,
    subject     text        NOT NULL,
    saga_id     text        REFERENCES orchestrator.sagas (id),
    effect      text        NOT NULL CONSTRAINT events_effect_known
                            CHECK (effect IN ('started', 'advanced', 'ignored')),
    detail      text,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_by_saga ON orchestrator.events (saga_id) WHERE saga_id IS NOT NULL;

-- Commands waiting for the relay, which publishes them to <prefix>.commands; written in the
-- transaction of the saga change that issues them. The shape of every outbox (event_id holds
-- the command's id).
CREATE TABLE orchestrator.outbox (
    id           bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL CONSTRAINT orchestrator_outbox_event_unique UNIQUE,
    message_key  bytea       NOT NULL,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX orchestrator_outbox_unpublished ON orchestrator.outbox (id) WHERE published_at IS NULL;
