"""Which gateway the processor charges: the one place ``gateway.provider`` is read."""

from __future__ import annotations

from workers.core.config import Settings
from workers.processor.connectors.stripe import StripeGateway
from workers.processor.gateway import Gateway, HttpGateway
from workers.processor.metered import MeteredGateway


def make_gateway(settings: Settings) -> Gateway:
    """The simulator's HTTP client (the default) or the Stripe connector, each call metered."""
    if settings.gateway.provider == "stripe":
        return MeteredGateway(StripeGateway(settings.gateway))
    return MeteredGateway(HttpGateway(settings))
