"""Where FlowPay may send a webhook: the rules for an endpoint's URL and the address it reaches.

A webhook is a POST of merchant data from inside FlowPay's network to a URL a merchant chose, so
the URL must be ``https`` and must not reach inside the network: loopback, private (RFC 1918,
RFC 4193), link-local (cloud metadata at 169.254.169.254 among them), CGNAT, multicast,
unspecified and other addresses that are not globally routable, also when written as IPv6 forms
that carry an IPv4 address. Registration checks the URL (resolving its host when it can) and the
notifier checks the address it connects to on every attempt, because DNS can change in between.
``notifier.allow_insecure_http`` and ``notifier.allow_private_targets`` lift the rules for a
local stack's own receivers.

Shared: the notifier's registration and sender, and the merchant API's endpoints, use these.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Final
from urllib.parse import urlsplit

from workers.core.config import NotifierSettings
from workers.core.errors import FlowPayError

IPAddress = IPv4Address | IPv6Address
MAX_URL_LENGTH: Final = 2000

_IPV4_RULES: Final = (
    (IPv4Network("0.0.0.0/8"), "unspecified"),
    (IPv4Network("127.0.0.0/8"), "loopback"),
    (IPv4Network("10.0.0.0/8"), "private (RFC 1918)"),
    (IPv4Network("172.16.0.0/12"), "private (RFC 1918)"),
    (IPv4Network("192.168.0.0/16"), "private (RFC 1918)"),
    (IPv4Network("169.254.0.0/16"), "link-local"),
    (IPv4Network("100.64.0.0/10"), "CGNAT (RFC 6598)"),
    (IPv4Network("224.0.0.0/4"), "multicast"),
    (IPv4Network("255.255.255.255/32"), "broadcast"),
)
_IPV6_RULES: Final = (
    (IPv6Network("::/128"), "unspecified"),
    (IPv6Network("::1/128"), "loopback"),
    (IPv6Network("fc00::/7"), "private (RFC 4193)"),
    (IPv6Network("fe80::/10"), "link-local"),
    (IPv6Network("ff00::/8"), "multicast"),
    # IPv4-compatible addresses (deprecated): nothing legitimate is reached through them.
    (IPv6Network("::/96"), "reserved (IPv4-compatible)"),
)
# IPv6 forms that reach an IPv4 address: whatever that address is refused for, so are they.
_NAT64: Final = IPv6Network("64:ff9b::/96")
_LOCAL_NAMES: Final = ("localhost", ".localhost")  # always loopback (RFC 6761)

Resolver = Callable[[str, int], Iterable[str]]


class InvalidWebhookUrl(FlowPayError):
    """A webhook URL FlowPay will not send to; ``rule`` names the rule it breaks."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def forbidden_reason(address: IPAddress) -> str | None:
    """The rule that forbids sending a webhook to ``address``, or None when it may be reached."""
    if isinstance(address, IPv6Address):
        carried = _carried_ipv4(address)
        if carried is not None:
            reason = forbidden_reason(carried)
            return None if reason is None else f"{reason}, as the IPv6 form {address}"
        for network, rule in _IPV6_RULES:
            if address in network:
                return rule
    else:
        reason = _ipv4_reason(address)
        if reason is not None:
            return reason
    return None if address.is_global else "reserved (not globally routable)"


def check_address(host: str, address: IPAddress, settings: NotifierSettings) -> None:
    """Raise ``InvalidWebhookUrl`` when ``host``'s ``address`` must not be reached."""
    if settings.allow_private_targets:
        return
    reason = forbidden_reason(address)
    if reason is not None:
        shown = host if host == str(address) else f"{host} ({address})"
        raise InvalidWebhookUrl(
            reason,
            f"webhook target {shown} is {reason}; refused unless notifier.allow_private_targets",
        )


def check_scheme(scheme: str, settings: NotifierSettings) -> None:
    if scheme == "https" or (scheme == "http" and settings.allow_insecure_http):
        return
    raise InvalidWebhookUrl(
        "https",
        "webhook URL must be https"
        + ("" if scheme != "http" else " (http only with notifier.allow_insecure_http)"),
    )


def check_webhook_url(url: str, settings: NotifierSettings, resolve: Resolver | None = None) -> str:
    """``url`` when FlowPay may send webhooks to it; else ``InvalidWebhookUrl`` naming the rule.

    A host name is resolved (``resolve``: the system's resolver) and every address it has is
    checked; a name that does not resolve yet is accepted, as each attempt checks again.
    """
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, or out of range
        host, port = None, None
    if not host or len(url) > MAX_URL_LENGTH or parts.scheme not in ("http", "https"):
        raise InvalidWebhookUrl("url", "webhook URL must be an http(s) URL with a host")
    check_scheme(parts.scheme, settings)
    if settings.allow_private_targets:
        return url
    default_port = 443 if parts.scheme == "https" else 80
    for address in addresses_of(host, port or default_port, resolve or _system_resolve):
        check_address(host, address, settings)
    return url


def addresses_of(host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    """The addresses ``host`` names: itself when it is one, else what it resolves to."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    name = host.rstrip(".").lower()
    if name == _LOCAL_NAMES[0] or name.endswith(_LOCAL_NAMES[1]):
        return [IPv4Address("127.0.0.1")]
    try:
        return [ip_address(found.split("%", 1)[0]) for found in resolve(host, port)]
    except OSError:
        return []


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an address when it is one, in any form the system would connect to.

    The C library also takes shortened and numeric IPv4 forms (``127.1``, ``2130706433``,
    ``0x7f.0.0.1``), which ``ipaddress`` does not.
    """
    try:
        return ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _ipv4_reason(address: IPv4Address) -> str | None:
    for network, rule in _IPV4_RULES:
        if address in network:
            return rule
    return None


def _carried_ipv4(address: IPv6Address) -> IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _system_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]
