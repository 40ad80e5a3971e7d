"""Which gateway the processor charges: the one place ``gateway.provider`` is read."""

from __future__ import annotations

from workers.core.config import Settings
from workers.processor.authorizations import SimGateway
from workers.processor.connectors.stripe import StripeGateway
from workers.processor.metered import MeteredCaptureGateway
from workers.processor.operations import OperationsGateway


def make_gateway(settings: Settings) -> OperationsGateway:
    """The simulator's HTTP client (the default) or the Stripe connector, each call metered."""
    if settings.gateway.provider == "stripe":
        return MeteredCaptureGateway(StripeGateway(settings.gateway))
    return MeteredCaptureGateway(SimGateway(settings))
