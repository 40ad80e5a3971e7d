"""The chaos scenario's own tools, without a stack: the secrets scan and the fault schedule."""

from __future__ import annotations

from pathlib import Path

from chaos.faults import KINDS, schedule
from chaos.secrets import leaks


def test_the_secrets_scan_finds_each_secret_whole_or_as_its_key_part(tmp_path: Path) -> None:
    log = tmp_path / "role.log"
    log.write_text('{"message": "signing with c2VjcmV0LWJ5dGVz"}\n{"message": "ok"}\n')
    secrets = {"webhook secret": "whsec_c2VjcmV0LWJ5dGVz", "API key": "fp_live_abc123"}

    found = leaks(secrets, {"flowpay status": "key fp_live_abc123 twice fp_live_abc123"}, [log])

    assert sorted(found) == [
        "API key appears 2 times in flowpay status",
        f"webhook secret (key part) appears 1 times in {log}",
    ]
    assert leaks(secrets, {"flowpay dev status": "postgresql://flowpay:***@host"}, [log]) == [
        f"webhook secret (key part) appears 1 times in {log}"
    ]


def test_the_schedule_has_every_kind_each_round_in_a_seeded_order() -> None:
    three = schedule(KINDS, 3, seed=5)

    assert three == schedule(KINDS, 3, seed=5)
    assert three != schedule(KINDS, 3, seed=6)
    for round_ in range(3):
        assert sorted(three[round_ * len(KINDS) : (round_ + 1) * len(KINDS)]) == sorted(KINDS)
