"""One HTTP client per process for FlowPay's calls to its own endpoints (health checks, probes).

``httpx.get()`` and its kin make a new client for every call, and making one costs some 30 ms
of CPU, even for plain ``http://``: it builds a TLS context and loads the CA bundle into it. A
health check polled ten times a second spent a third of a core on that alone. This client is
made once, keeps connections alive between calls, and keeps no cookies, so that each call
stands alone as it would with ``httpx.get()``.

Not for merchants' endpoints: webhooks go through ``workers.core.outbound_http``, which bounds
what it reads and where it may connect.
"""

from __future__ import annotations

from functools import cache
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx


@cache
def client() -> httpx.Client:
    """The process's client (thread-safe; each call passes its own timeout)."""
    return httpx.Client(cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])))
