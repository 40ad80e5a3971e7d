"""The API service: merchant HTTP API, idempotent intake, status read model."""
