"""Standard Webhooks signing, checked against the specification's published example."""

from __future__ import annotations

import pytest

from workers.core.webhooks import InvalidSignature, headers, sign, verify

# From the Standard Webhooks reference libraries' tests.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - the published test secret
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_published_example() -> None:
    assert sign(SECRET, MSG_ID, TIMESTAMP, BODY) == EXPECTED


def test_verify_accepts_the_example_within_tolerance() -> None:
    received = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": EXPECTED,
    }
    assert verify(BODY, received, SECRET, now=TIMESTAMP + 299) == {"test": 2432232314}


@pytest.mark.parametrize("skew", [-301, 301])
def test_verify_refuses_old_and_future_timestamps(skew: int) -> None:
    received = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": EXPECTED,
    }
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify(BODY, received, SECRET, now=TIMESTAMP + skew)


def test_verify_refuses_a_tampered_body_a_wrong_secret_and_missing_headers() -> None:
    received = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": EXPECTED,
    }
    with pytest.raises(InvalidSignature):
        verify(b'{"test": 1}', received, SECRET, now=TIMESTAMP)
    with pytest.raises(InvalidSignature):
        verify(BODY, received, "whsec_" + "A" * 32, now=TIMESTAMP)
    with pytest.raises(InvalidSignature):
        verify(BODY, {"webhook-id": MSG_ID}, SECRET, now=TIMESTAMP)


def test_one_of_several_signatures_suffices() -> None:
    received = headers(SECRET, MSG_ID, BODY, now=TIMESTAMP)
    received["webhook-signature"] = "v1,bm90IHRoaXMgb25l " + received["webhook-signature"]
    assert verify(BODY, received, SECRET, now=TIMESTAMP)["test"] == 2432232314
