"""normalise(): the accepted spellings of an international number, and the refusals."""

import re

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tikosms.numbers import InvalidNumber, normalise


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("+380501234567", "380501234567"),  # E.164
        ("380501234567", "380501234567"),  # digits only: the form the API stores and returns
        ("00380501234567", "380501234567"),  # 00 international prefix
        ("+380 50 123 45 67", "380501234567"),  # spaces
        ("+380-50-123-45-67", "380501234567"),  # dashes
        ("+380.50.123.45.67", "380501234567"),  # dots
        ("+380 (50) 123-45-67", "380501234567"),  # brackets
        ("  +380501234567\t", "380501234567"),  # surrounding whitespace
        ("+380\u00a050\u00a01234567", "380501234567"),  # no-break spaces from a spreadsheet
        ("00 380 (50) 123.45-67", "380501234567"),  # everything at once
        ("+380 (0)50 123 4567", "380501234567"),  # national trunk 0 after the code is dropped
        ("+44 (0) 7400 123456", "447400123456"),  # same in the UK
        ("+1 (415) 555-2671", "14155552671"),  # US, NANP grouping
        ("+39 06 6988 0000", "390669880000"),  # Italy keeps the leading 0 of its numbers
        ("+380441234567", "380441234567"),  # Kyiv fixed line: valid, may be sent
    ],
)
def test_normalise_accepts_international_spellings(raw: str, digits: str) -> None:
    assert normalise(raw) == digits


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "The number is empty."),  # nothing
        ("+", "The number is empty."),  # a prefix alone
        ("+380 50 123 45 6x", "may only hold digits"),  # a letter
        ("+380/50/1234567", "may only hold digits"),  # a separator we do not accept
        ("+38050+1234567", "may only hold digits"),  # '+' inside the number
        ("٣٨٠٥٠١٢٣٤٥٦٧", "may only hold digits"),  # non-ASCII (Arabic-Indic) digits
        ("12", "too short"),  # fewer than 3 digits
        ("+999123456789", "does not start with a country code"),  # +999 is unassigned
        ("0380501234567", "does not start with a country code"),  # national format, no code
        ("+38050123", "too short for Ukraine (+380)"),  # 5 of 9 digits
        ("+3805012345678", "too long for a mobile number of Ukraine (+380)"),  # 10 digits
        ("+380 50 123 45 67 89 00 11", "too long for Ukraine (+380)"),  # far too long
        ("+1 999 555 0123", "any country with the code +1"),  # no +1 country has area 999
        ("+44 7700 900123", "any country with the code +44"),  # Ofcom's drama range
        ("+80012345678", "international services"),  # freephone +800: no country
        ("+882 1612 3456", "international services"),  # +882 networks: no country
    ],
)
def test_normalise_refuses_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidNumber, match=re.escape(reason)):
        normalise(raw)


def test_invalid_number_is_a_value_error() -> None:
    # Callers that only know ValueError (pydantic validators) still catch it.
    with pytest.raises(ValueError):
        normalise("nonsense")


def test_invalid_number_message_is_one_sentence() -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalise("+38050123")
    message = str(caught.value)
    assert message[0].isupper() and message.endswith(".") and "\n" not in message


@pytest.mark.parametrize("region", sorted(phonenumbers.SUPPORTED_REGIONS))
def test_every_countrys_example_mobile_number_is_valid(region: str) -> None:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:
        pytest.skip(f"libphonenumber has no example mobile number for {region}")
    e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    assert normalise(e164) == e164[1:]


def _example_digits(region: str) -> str:
    example = phonenumbers.example_number(region)
    assert example is not None
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]


_NEAR_VALID = st.builds(
    lambda region, tail: _example_digits(region)[: -len(tail)] + tail,
    st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)),
    st.from_regex(r"[0-9]{1,5}", fullmatch=True),
)


@given(st.one_of(st.from_regex(r"[1-9][0-9]{5,14}", fullmatch=True), _NEAR_VALID))
def test_valid_exactly_when_libphonenumber_says_so(digits: str) -> None:
    # normalise() asks for the number type instead of calling is_valid_number(); they must
    # agree (non-geographic +800-style numbers are refused on purpose).
    try:
        parsed = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        expected = False
    else:
        expected = phonenumbers.is_valid_number(parsed) and (
            phonenumbers.region_code_for_number(parsed) != "001"
        )
    try:
        normalise(digits)
    except InvalidNumber:
        assert not expected
    else:
        assert expected


@given(st.sampled_from(["+", "00", ""]), st.lists(st.sampled_from([" ", "-", ".", "()"])))
def test_prefix_and_separators_never_change_the_result(prefix: str, seps: list[str]) -> None:
    digits = "380671234567"
    spelled = prefix + "".join(d + (seps[i] if i < len(seps) else "") for i, d in enumerate(digits))
    assert normalise(spelled) == digits


def test_normalise_is_idempotent_on_its_output() -> None:
    once = normalise("+44 (0) 7400 123456")
    assert normalise(once) == once
