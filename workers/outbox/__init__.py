"""The outbox relay: moves stored events to Kafka, at least once, in order per payment."""
