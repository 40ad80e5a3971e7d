"""No secret in any log line or CLI output: every secret the scenario made, searched for everywhere.

A webhook secret is searched for whole and without its ``whsec_`` prefix (the key bytes), so a
log that printed only the base64 part is caught too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def variants(label: str, secret: str) -> dict[str, str]:
    found = {label: secret}
    if secret.startswith("whsec_"):
        found[f"{label} (key part)"] = secret.removeprefix("whsec_")
    return found


def leaks(secrets: dict[str, str], outputs: dict[str, str], files: Iterable[Path]) -> list[str]:
    """One line per (secret, place) where the secret shows; ``outputs``: name -> captured text."""
    texts = dict(outputs)
    for path in files:
        texts[str(path)] = path.read_text(errors="replace")
    wanted = {
        name: value
        for label, secret in secrets.items()
        for name, value in variants(label, secret).items()
    }
    found = []
    for place, text in texts.items():
        for name, value in wanted.items():
            count = text.count(value)
            if count:
                found.append(f"{name} appears {count} times in {place}")
    return found
