"""What every service shares: configuration, database, Kafka, events, the consumer engine."""
