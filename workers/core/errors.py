"""FlowPay's exception tree. Every expected failure is one of these.

    FlowPayError                    anything FlowPay expects and can explain in one line
    ├── ConfigError                 a configuration value is missing or wrong
    │   └── KafkaAccessError        the brokers refuse a client's credentials or TLS set-up
    ├── StackError                  the local dev stack could not be installed, started or reached
    ├── NotFoundError               an id names nothing
    ├── DatabaseError               PostgreSQL refused a statement for a known reason
    │   └── ConstraintViolation     a named constraint was violated (see ``constraint``)
    ├── EventError                  a Kafka message cannot become an event (dead-letter it)
    │   ├── MalformedEvent          bytes that are not a valid envelope or payload
    │   │   └── MalformedCommand    ... of a command (the orchestrator's, on the command topic)
    │   └── UnknownEventType        a well-formed envelope of a type we do not know
    │       └── UnknownCommandType  ... of a command
    └── HandlerError                raised by a handler to tell the runner what to do
        ├── TransientError          retry with backoff; never dead-letter
        └── PermanentError          dead-letter now; retrying cannot help

The CLI turns any ``FlowPayError`` into one line on stderr and exit code 2.
"""

from __future__ import annotations


class FlowPayError(Exception):
    """Base of every error FlowPay expects."""


class ConfigError(FlowPayError):
    """A configuration value is missing or wrong."""


class KafkaAccessError(ConfigError):
    """The Kafka brokers refuse a client's credentials or TLS set-up: retrying cannot help."""


class StackError(FlowPayError):
    """The local stack could not be installed, started or reached."""


class NotFoundError(FlowPayError):
    """An id names nothing."""


class DatabaseError(FlowPayError):
    """PostgreSQL refused a statement for a known reason."""


class ConstraintViolation(DatabaseError):
    """A named constraint was violated; ``constraint`` says which."""

    def __init__(self, constraint: str, message: str) -> None:
        super().__init__(message)
        self.constraint = constraint


class EventError(FlowPayError):
    """A Kafka message cannot become an event."""


class MalformedEvent(EventError):
    """Bytes that are not a valid envelope or payload."""


class UnknownEventType(EventError):
    """A well-formed envelope of a type this version does not know."""


class MalformedCommand(MalformedEvent):
    """Bytes that are not a valid command envelope or payload."""


class UnknownCommandType(UnknownEventType):
    """A well-formed command envelope of a type this version does not know."""


class HandlerError(FlowPayError):
    """Raised by a handler to steer the consumer runner."""


class TransientError(HandlerError):
    """Retry with backoff; the message is never dead-lettered for this."""


class PermanentError(HandlerError):
    """Dead-letter the message now; retrying cannot help."""
