-- processor 0004: the orchestrator's commands the processor executed, each recorded in the
-- transaction of its effects, so that a redelivered command changes nothing.

CREATE TABLE processor.commands (
    command_id  uuid        PRIMARY KEY,
    payment_id  text        NOT NULL,
    type        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
