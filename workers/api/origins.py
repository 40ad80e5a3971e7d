"""Web origins (``scheme://host[:port]``) as browsers send them in ``Origin``: what a merchant
may allow to use its payments' client secrets (CORS).

An allowed origin is kept in the form a browser serialises it (RFC 6454): lower-case scheme and
host, no default port, no path, so that a plain string comparison with ``Origin`` decides.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

from workers.core.errors import FlowPayError

SCHEMES: Final = {"http": 80, "https": 443}
MAX_ORIGINS: Final = 100
MAX_LENGTH: Final = 300
# A DNS name or IPv4 address (as browsers send them: ASCII, IDNs in punycode), or an IPv6 one.
_LABEL = "[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
HOST: Final = re.compile(rf"{_LABEL}(\.{_LABEL})*|[0-9a-f:.]+")


class OriginInvalid(FlowPayError, ValueError):
    """Not an origin a browser could send."""


def check_origin(text: str) -> str:
    """``text`` as a browser would send it in ``Origin``, or OriginInvalid saying why."""
    if not text or len(text) > MAX_LENGTH or not text.isascii() or not text.isprintable():
        raise OriginInvalid(f"{text!r}: not scheme://host[:port] (ASCII, at most {MAX_LENGTH})")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise OriginInvalid(f"{text!r}: {exc}") from None
    default = SCHEMES.get(parts.scheme.lower())
    if default is None:
        raise OriginInvalid(f"{text!r}: the scheme must be http or https")
    host = parts.hostname
    if not host or "@" in parts.netloc or parts.path or parts.query or parts.fragment:
        raise OriginInvalid(f"{text!r}: not scheme://host[:port] (no user, path or query)")
    if text.endswith(("?", "#")):
        raise OriginInvalid(f"{text!r}: not scheme://host[:port] (no user, path or query)")
    if not HOST.fullmatch(host) or port == 0:
        raise OriginInvalid(f"{text!r}: not a valid host and port")
    shown = f"[{host}]" if ":" in host else host
    if port is not None and port != default:
        shown += f":{port}"
    return f"{parts.scheme.lower()}://{shown}"


def check_origins(texts: list[str]) -> list[str]:
    """Each of ``texts`` checked, without repeats, in the order given."""
    if len(texts) > MAX_ORIGINS:
        raise OriginInvalid(f"at most {MAX_ORIGINS} origins per merchant")
    return list(dict.fromkeys(check_origin(text) for text in texts))
