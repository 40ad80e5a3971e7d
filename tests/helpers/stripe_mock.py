"""stripe-mock, Stripe's own API mock: it checks every request against Stripe's OpenAPI
specification and answers from fixtures. Installed once, at a pinned version, under
``.flowpay/stripe-mock/<version>/`` (``make test`` does it: ``python -m tests.helpers.stripe_mock``),
and started by tests on a free port, with ``-strict-version-check`` so that the SDK and the mock
speak the same API version.

Its fixtures answer one status per resource (a PaymentIntent is ``requires_payment_method``);
a test that needs another starts one with the resource's fields changed (``patches``).
Every answer is in its log: ``refusals`` lists those that were not 2xx, which the tests of
the connector assert are none.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import httpx
import stripe
from filelock import FileLock

from tests.conftest import ROOT
from tests.helpers.servers import free_port
from tests.helpers.waiting import wait_for
from workers.api.stripe_webhooks import PATH
from workers.core import local_http

MODULE: Final = "github.com/stripe/stripe-mock"
# Its specification is Stripe's API version 2026-08-26.dahlia, the pinned SDK's (stripe 15.6.2).
VERSION: Final = "v0.203.0"
HOME: Final = ROOT / ".flowpay" / "stripe-mock" / VERSION
BINARY: Final = HOME / "stripe-mock"
FIXTURES: Final = HOME / "fixtures3.json"
_ANSWER: Final = re.compile(r"^Response: .*status=(\d{3})")


def install() -> Path:
    """The pinned stripe-mock, built by ``go install`` the first time; its binary's path."""
    HOME.mkdir(parents=True, exist_ok=True)
    with FileLock(str(HOME / ".install.lock")):
        if not BINARY.exists():
            env = {**os.environ, "GOBIN": str(HOME), "GOFLAGS": "-mod=mod"}
            subprocess.run(["go", "install", f"{MODULE}@{VERSION}"], env=env, check=True)
        if not FIXTURES.exists():
            found = subprocess.run(
                ["go", "mod", "download", "-json", f"{MODULE}@{VERSION}"],
                capture_output=True,
                check=True,
                text=True,
            )
            source = Path(json.loads(found.stdout)["Dir"]) / "embedded/openapi/fixtures3.json"
            shutil.copyfile(source, FIXTURES.with_suffix(".tmp"))
            FIXTURES.with_suffix(".tmp").rename(FIXTURES)
    return BINARY


@cache
def _bundled() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(FIXTURES.read_text())
    return loaded


@dataclass
class StripeMock:
    url: str
    log: Path

    def mark(self) -> int:
        """Where the log ends now: ``refusals(mark)`` looks at what came after."""
        return self.log.stat().st_size

    def refusals(self, since: int = 0) -> list[str]:
        """The answers that were not 2xx (requests stripe-mock refused), after ``since``."""
        with self.log.open("rb") as log:
            log.seek(since)
            lines = log.read().decode(errors="replace").splitlines()
        return [line for line in lines if (m := _ANSWER.match(line)) and m[1][0] != "2"]

    def requests(self, since: int = 0) -> list[str]:
        """``METHOD /path`` of each request it got, after ``since``."""
        with self.log.open("rb") as log:
            log.seek(since)
            lines = log.read().decode(errors="replace").splitlines()
        return [line.removeprefix("Request: ") for line in lines if line.startswith("Request: ")]


@contextmanager
def stripe_mock(
    directory: Path, patches: dict[str, dict[str, Any]] | None = None
) -> Iterator[StripeMock]:
    """A stripe-mock of its own, its resources' fixtures changed by ``patches``."""
    install()
    directory.mkdir(parents=True, exist_ok=True)
    fixtures = copy.deepcopy(_bundled())
    for resource, fields in (patches or {}).items():
        fixtures["resources"][resource].update(fields)
    fixture_file = directory / "fixtures.json"
    fixture_file.write_text(json.dumps(fixtures))
    log = directory / "stripe-mock.log"
    port = free_port()
    args = [str(BINARY), "-http-addr", f"127.0.0.1:{port}", "-https-addr", "127.0.0.1:"]
    args += ["-strict-version-check", "-fixtures", str(fixture_file)]
    with log.open("ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: process.poll() is not None or "Listening for HTTP at" in log.read_text(),
            30,
            "stripe-mock to listen",
        )
        assert process.poll() is None, log.read_text()
        yield StripeMock(f"http://127.0.0.1:{port}", log)
    finally:
        process.terminate()
        process.wait(10)


def post_stripe_event(api_url: str, event: dict[str, Any], secret: str) -> httpx.Response:
    """``event`` sent to FlowPay's Stripe webhook route, signed by the SDK's own helper."""
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, secret)
    return local_http.client().post(
        api_url + PATH,
        content=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        timeout=30,
    )


if __name__ == "__main__":
    print(install(), file=sys.stderr)
