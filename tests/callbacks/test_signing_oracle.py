"""Our signing against the `standardwebhooks` reference package, used only as a test oracle.

Skipped where the package is not installed (it is a test dependency, nothing imports it at
run time); the published test vector in test_signing.py does not need it.
"""

from datetime import UTC, datetime

import pytest

from tikosms.callbacks import signing

webhooks = pytest.importorskip("standardwebhooks.webhooks")

NOW = 1_750_000_000
BODY = b'{"event":"message.status","status":"DELIVRD"}'


def test_reference_library_verifies_our_headers() -> None:
    secret = signing.generate_secret()
    now = int(datetime.now(UTC).timestamp())
    headers = signing.headers(secret, "evt_2", now, BODY)
    assert webhooks.Webhook(secret).verify(BODY, headers) == {
        "event": "message.status",
        "status": "DELIVRD",
    }


def test_reference_library_rejects_a_tampered_body() -> None:
    secret = signing.generate_secret()
    now = int(datetime.now(UTC).timestamp())
    headers = signing.headers(secret, "evt_3", now, BODY)
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.Webhook(secret).verify(BODY.replace(b"DELIVRD", b"UNDELIV"), headers)


def test_verify_accepts_what_the_reference_library_signs() -> None:
    secret = signing.generate_secret()
    when = datetime.fromtimestamp(NOW, UTC)
    signature = webhooks.Webhook(secret).sign("evt_4", when, BODY.decode())
    headers = {"webhook-id": "evt_4", "webhook-timestamp": str(NOW), "webhook-signature": signature}
    assert signing.verify(secret, headers, BODY, now=NOW)
