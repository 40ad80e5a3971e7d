"""The processor: the payment state machine and the gateway."""
