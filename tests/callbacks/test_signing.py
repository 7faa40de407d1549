import base64
from datetime import UTC, datetime

import pytest

from tikosms.callbacks import signing

# The test vector of the Standard Webhooks reference libraries (`test_sign_function`).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NOW = 1_750_000_000
BODY = b'{"event":"message.status","status":"DELIVRD"}'


def vector_headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": signature,
    }


def test_sign_matches_the_published_test_vector() -> None:
    assert signing.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == (
        VECTOR_SIGNATURE
    )


def test_sign_accepts_a_secret_without_the_prefix() -> None:
    bare = VECTOR_SECRET.removeprefix("whsec_")
    assert signing.sign(bare, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_verify_accepts_the_published_test_vector() -> None:
    assert signing.verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP)


def test_generated_secret_is_whsec_and_32_random_bytes() -> None:
    secret = signing.generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert signing.generate_secret() != secret


def test_headers_carry_id_timestamp_signature_and_content_type() -> None:
    secret = signing.generate_secret()
    headers = signing.headers(secret, "evt_1", NOW, BODY)
    assert headers == {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(NOW),
        "webhook-signature": signing.sign(secret, "evt_1", NOW, BODY),
        "content-type": "application/json",
    }


def test_verify_round_trips_with_the_clock() -> None:
    secret = signing.generate_secret()
    now = int(datetime.now(UTC).timestamp())
    assert signing.verify(secret, signing.headers(secret, "evt_5", now, BODY), BODY)


def test_verify_takes_a_str_body() -> None:
    assert signing.verify(
        VECTOR_SECRET, vector_headers(), VECTOR_BODY.decode(), now=VECTOR_TIMESTAMP
    )


def test_verify_matches_header_names_case_insensitively() -> None:
    headers = {name.title(): value for name, value in vector_headers().items()}
    assert signing.verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)


def test_verify_accepts_any_one_of_several_signatures() -> None:
    other = signing.sign(signing.generate_secret(), VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    listed = f"v1a,c29tZXRoaW5nIGVsc2U= {other} {VECTOR_SIGNATURE}"
    assert signing.verify(VECTOR_SECRET, vector_headers(listed), VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize(
    "signature",
    [
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",  # one bit off
        "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",  # right digest, unknown version
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",  # no version
        "v1,",  # empty digest
        "v1,not base64!",  # not base64
        "",  # empty header
    ],
)
def test_verify_rejects_a_bad_signature(signature: str) -> None:
    assert not signing.verify(
        VECTOR_SECRET, vector_headers(signature), VECTOR_BODY, now=VECTOR_TIMESTAMP
    )


def test_verify_rejects_another_secret() -> None:
    assert not signing.verify(
        signing.generate_secret(), vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP
    )


def test_verify_rejects_a_changed_body() -> None:
    assert not signing.verify(
        VECTOR_SECRET, vector_headers(), b'{"test": 2432232315}', now=VECTOR_TIMESTAMP
    )


def test_verify_rejects_another_message_id() -> None:
    headers = vector_headers() | {"webhook-id": "msg_other"}
    assert not signing.verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_rejects_a_missing_header(missing: str) -> None:
    headers = vector_headers()
    del headers[missing]
    assert not signing.verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize(
    ("skew", "accepted"),
    [
        (0, True),  # signed just now
        (300, True),  # exactly at the tolerance, in the past
        (-300, True),  # exactly at the tolerance, in the future (receiver's clock behind)
        (301, False),  # a replay from over five minutes ago
        (-301, False),  # too far in the future
    ],
)
def test_verify_enforces_the_timestamp_tolerance(skew: int, accepted: bool) -> None:
    secret = signing.generate_secret()
    headers = signing.headers(secret, "evt_6", NOW - skew, BODY)
    assert signing.verify(secret, headers, BODY, now=NOW) is accepted


def test_verify_honours_a_custom_tolerance() -> None:
    secret = signing.generate_secret()
    headers = signing.headers(secret, "evt_7", NOW - 3600, BODY)
    assert signing.verify(secret, headers, BODY, tolerance=3600, now=NOW)


@pytest.mark.parametrize("timestamp", ["1614265330.5", "-1614265330", "soon", "1e9"])
def test_verify_rejects_a_timestamp_that_is_not_integer_seconds(timestamp: str) -> None:
    headers = vector_headers() | {"webhook-timestamp": timestamp}
    assert not signing.verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_not*base64",  # not base64
        "whsec_" + base64.b64encode(b"x" * 23).decode(),  # shorter than the spec's 24 bytes
        "whsec_" + base64.b64encode(b"x" * 65).decode(),  # longer than its 64 bytes
    ],
)
def test_malformed_secret_is_a_configuration_error(secret: str) -> None:
    with pytest.raises(ValueError):
        signing.sign(secret, "evt_8", NOW, BODY)
    with pytest.raises(ValueError):
        signing.verify(secret, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize("msg_id", ["evt.1", "evt 1", "evt\n1", ""])
def test_sign_refuses_a_message_id_that_could_forge_the_signed_content(msg_id: str) -> None:
    with pytest.raises(ValueError):
        signing.sign(VECTOR_SECRET, msg_id, NOW, BODY)
