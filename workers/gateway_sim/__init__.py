"""The gateway simulator: a real HTTP gateway with fault injection."""
