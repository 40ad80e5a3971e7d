"""One HTTP client per process for FlowPay's calls to its own endpoints (health checks, probes).

``httpx.get()`` and its kin make a new client for every call, and making one costs some 30 ms
of CPU, even for plain ``http://``: it builds a TLS context and loads the CA bundle into it. A
health check polled ten times a second spent a third of a core on that alone. This client is
made once and keeps no cookies. Unlike ``httpx.get()``, its calls share kept-alive connections:
a call that must have a connection of its own (to land on another server process, say) sends
``Connection: close``. It lets an idle connection go after ``KEEPALIVE_S``, well before
uvicorn's servers close theirs (5 s), so that it never sends on one the server is closing.

``tls_context()`` is the TLS context httpx would build, made once: a client made per worker or
per stream (``workers.api.client.ApiClient``) passes it as ``verify`` rather than load the CA
bundle again.

Not for merchants' endpoints: webhooks go through ``workers.core.outbound_http``, which bounds
what it reads and where it may connect.
"""

from __future__ import annotations

import ssl
from functools import cache
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Final

import httpx

KEEPALIVE_S: Final = 1.0


@cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CA bundle, or ``SSL_CERT_FILE``), made once."""
    return httpx.create_ssl_context()


@cache
def client() -> httpx.Client:
    """The process's client (thread-safe; httpx's default timeout of 5 s unless a call says)."""
    return httpx.Client(
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        limits=httpx.Limits(
            max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_S
        ),
        verify=tls_context(),
        # Calls to FlowPay's own endpoints: never through a proxy the environment names.
        trust_env=False,
    )
