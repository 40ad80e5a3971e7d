"""schemathesis' CLI against a running FlowPay, and what its run did (for the database checks).

The run is what a merchant's tooling would do with ``/openapi.json``: every check and phase
(tests/schemathesis.toml), FlowPay's own checks besides (tests/helpers/contract_checks.py),
as two merchants (the second only to read the first's objects). Its HAR report is every
request and answer, from which the test learns which payments the API said it created.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from tests.conftest import ROOT

CONFIG = ROOT / "tests" / "schemathesis.toml"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@dataclass(frozen=True)
class Run:
    returncode: int
    output: str
    exchanges: list[dict[str, Any]]  # HAR entries: every request sent and its answer

    def created_payments(self) -> set[str]:
        """The ids of the payments the API answered 202 to creating."""
        return {
            json.loads(entry["response"]["content"]["text"])["id"]
            for entry in self.exchanges
            if entry["request"]["method"] == "POST"
            and entry["request"]["url"].endswith("/v1/payments")
            and entry["response"]["status"] == 202
        }


def run_schemathesis(
    api_url: str,
    keys: dict[str, str],
    workdir: Path,
    *,
    seed: int | None,
    max_examples: int | None = None,
    max_time_s: int | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    """One run against ``api_url`` as the merchants of ``keys`` (the first makes every request).

    ``seed`` None is a random run; ``max_time_s`` repeats fuzzing and stateful testing until
    it is spent. ``env``: the values tests/schemathesis.toml reads from the environment.
    """
    wfc = workdir / "auth.json"
    wfc.write_text(json.dumps({"auth": [_identity(name, key) for name, key in keys.items()]}))
    har = workdir / "exchanges.har"
    command = [
        str(SCHEMATHESIS), "--no-color", "--config-file", str(CONFIG), "run",
        f"{api_url}/openapi.json", "--checks", "all",
        # contract_checks.created_resources_found stands in for it (it knows replays).
        "--exclude-checks", "ensure_resource_availability", "--report", "har",
        "--report-har-path", str(har), "--output-truncate", "false",
    ]  # fmt: skip
    if seed is not None:
        command += ["--seed", str(seed)]
    if max_examples is not None:
        command += ["--max-examples", str(max_examples)]
    if max_time_s is not None:
        command += ["--max-time", str(max_time_s)]
    # The hooks module imports tests.helpers and workers from the checkout.
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT), "CONTRACT_AUTH_FILE": str(wfc)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    exchanges = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    return Run(done.returncode, done.stdout + done.stderr, exchanges)


def _identity(name: str, key: str) -> dict[str, Any]:
    return {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {key}"}]}


def conforms(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    """``instance`` is valid against ``schema``, a schema of ``document`` (its refs resolved)."""
    root = {**schema, "components": document["components"]}
    jsonschema.Draft202012Validator(root).validate(instance)
