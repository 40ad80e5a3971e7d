"""The rules for where a webhook may go (``workers.core.webhook_urls``), as pure code."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from workers.core.config import NotifierSettings
from workers.core.webhook_urls import (
    InvalidWebhookUrl,
    check_webhook_url,
    forbidden_reason,
    literal_address,
)

STRICT = NotifierSettings()  # the defaults: both rules on
LOCAL = NotifierSettings(allow_insecure_http=True, allow_private_targets=True)

FORBIDDEN = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private (RFC 1918)"),
    ("172.16.0.1", "private (RFC 1918)"),
    ("172.31.255.254", "private (RFC 1918)"),
    ("192.168.0.10", "private (RFC 1918)"),
    ("fd12:3456::1", "private (RFC 4193)"),
    ("fc00::1", "private (RFC 4193)"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("100.64.0.1", "CGNAT (RFC 6598)"),
    ("100.127.255.254", "CGNAT (RFC 6598)"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("255.255.255.255", "broadcast"),
    ("192.0.2.1", "reserved (not globally routable)"),
    ("240.0.0.1", "reserved (not globally routable)"),
    ("::127.0.0.1", "reserved (IPv4-compatible)"),
    # IPv6 forms that carry an IPv4 address are refused for what they carry.
    ("::ffff:127.0.0.1", "loopback, as the IPv6 form ::ffff:7f00:1"),
    ("::ffff:10.0.0.1", "private (RFC 1918), as the IPv6 form ::ffff:a00:1"),
    ("::ffff:169.254.169.254", "link-local, as the IPv6 form ::ffff:a9fe:a9fe"),
    ("::ffff:100.64.0.1", "CGNAT (RFC 6598), as the IPv6 form ::ffff:6440:1"),
    ("64:ff9b::a9fe:a9fe", "link-local, as the IPv6 form 64:ff9b::a9fe:a9fe"),
    ("2002:7f00:1::", "loopback, as the IPv6 form 2002:7f00:1::"),
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "100.128.0.1"]


@pytest.mark.parametrize(("address", "rule"), FORBIDDEN)
def test_each_forbidden_address_names_its_rule(address: str, rule: str) -> None:
    assert forbidden_reason(ip_address(address)) == rule


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_reason(ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://[::1]:8443/hook", "loopback"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback, as the IPv6 form ::ffff:7f00:1"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://10.0.0.5/hook", "private (RFC 1918)"),
        ("https://[fd00::5]/hook", "private (RFC 4193)"),
        ("https://100.64.1.1/hook", "CGNAT (RFC 6598)"),
        ("https://0.0.0.0/hook", "unspecified"),
        # Forms the C library connects to, though they are not dotted quads.
        ("https://2130706433/hook", "loopback"),
        ("https://127.1/hook", "loopback"),
        ("https://0x7f.0.0.1/hook", "loopback"),
        ("https://localhost/hook", "loopback"),
        ("https://LOCALHOST./hook", "loopback"),
        ("https://api.localhost/hook", "loopback"),
    ],
)
def test_registration_refuses_private_targets_naming_the_rule(url: str, rule: str) -> None:
    with pytest.raises(InvalidWebhookUrl) as refused:
        check_webhook_url(url, STRICT, resolve=_nowhere)
    assert refused.value.rule == rule
    assert rule in str(refused.value)
    assert "notifier.allow_private_targets" in str(refused.value)
    assert check_webhook_url(url, LOCAL, resolve=_nowhere) == url


def test_a_name_is_refused_for_any_private_address_it_resolves_to() -> None:
    def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.com", 8443)
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(InvalidWebhookUrl, match=r"hooks\.example\.com \(10\.0\.0\.7\)"):
        check_webhook_url("https://hooks.example.com:8443/x", STRICT, resolve=resolve)


def test_a_public_name_or_one_that_does_not_resolve_yet_is_accepted() -> None:
    def public(_host: str, _port: int) -> list[str]:
        return ["93.184.216.34", "2606:2800:220:1::1"]

    def unresolvable(_host: str, _port: int) -> list[str]:
        raise OSError("Name or service not known")

    url = "https://hooks.example.com/x"
    assert check_webhook_url(url, STRICT, resolve=public) == url
    # Every attempt checks the address it connects to: this is only the first look.
    assert check_webhook_url(url, STRICT, resolve=unresolvable) == url


def test_http_is_refused_unless_allowed() -> None:
    with pytest.raises(InvalidWebhookUrl, match="must be https") as refused:
        check_webhook_url("http://93.184.216.34/hook", STRICT, resolve=_nowhere)
    assert refused.value.rule == "https"
    insecure = NotifierSettings(allow_insecure_http=True)
    assert check_webhook_url("http://93.184.216.34/hook", insecure, resolve=_nowhere)
    with pytest.raises(InvalidWebhookUrl, match="loopback"):
        check_webhook_url("http://127.0.0.1/hook", insecure, resolve=_nowhere)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "https:///nohost", "not a url", "https://h:99999/", "https://h:x/"],
)
def test_what_is_not_an_http_url_with_a_host_is_refused(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl) as refused:
        check_webhook_url(url, LOCAL, resolve=_nowhere)
    assert refused.value.rule == "url"


def test_literal_addresses_in_every_form() -> None:
    assert literal_address("[::1]") == ip_address("::1")
    assert literal_address("2130706433") == ip_address("127.0.0.1")
    assert literal_address("10.1") == ip_address("10.0.0.1")
    assert literal_address("hooks.example.com") is None


def _nowhere(host: str, _port: int) -> list[str]:
    raise AssertionError(f"{host} is an address or a local name: nothing to resolve")
