"""The fast parse of plain international digits must agree with phonenumbers.parse."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tikosms.numbers.parsing import fast_parse, number_type

TYPES = [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE,
         phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.VOIP]
EXAMPLES = sorted({
    f"{ex.country_code}{phonenumbers.national_significant_number(ex)}"
    for region in phonenumbers.SUPPORTED_REGIONS
    for kind in TYPES
    if (ex := phonenumbers.example_number_for_type(region, kind)) is not None
})


def agree(body: str) -> None:
    fast = fast_parse(body)
    if fast is None:
        return  # parse is used: nothing to compare
    try:
        slow = phonenumbers.parse("+" + body)
    except phonenumbers.NumberParseException:
        assert not phonenumbers.is_valid_number(fast)  # refused either way
        return
    assert (fast.country_code, fast.national_number) == (slow.country_code, slow.national_number)
    assert phonenumbers.number_type(fast) == phonenumbers.number_type(slow)


@pytest.mark.parametrize("body", EXAMPLES)
def test_every_example_number_parses_alike(body: str) -> None:
    agree(body)


@given(st.sampled_from(EXAMPLES), st.from_regex(r"[0-9]{1,5}", fullmatch=True))
def test_example_numbers_with_other_tails_parse_alike(body: str, tail: str) -> None:
    agree(body[: max(1, len(body) - len(tail))] + tail)


@pytest.mark.parametrize(
    "body",
    [
        "390612345678",  # Italy: a leading 0 in the national number: left to parse
        "4407400123456",  # a trunk 0 after the country code: left to parse
        "5491123456789",  # Argentina: national prefix rules transform digits: left to parse
    ],
)
def test_numbers_that_need_the_full_parser_are_left_to_it(body: str) -> None:
    if body.startswith(("39", "44")):
        assert fast_parse(body) is None
    agree(body)


ALL_TYPES = [t for t in vars(phonenumbers.PhoneNumberType).values() if isinstance(t, int)]
EVERY_EXAMPLE = sorted({
    (ex.country_code, ex.national_number)
    for region in phonenumbers.SUPPORTED_REGIONS
    for kind in ALL_TYPES
    if (ex := phonenumbers.example_number_for_type(region, kind)) is not None
})


def same_type(country_code: int, national: str) -> None:
    number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
    region = phonenumbers.region_code_for_number(number)
    if region is None:
        return  # parse refuses it before asking the type
    assert number_type(number, region) == phonenumbers.number_type(number), (
        country_code, national)


@pytest.mark.parametrize(("country_code", "national"), EVERY_EXAMPLE)
def test_number_type_agrees_with_phonenumbers_on_every_example(country_code: int,
                                                               national: int) -> None:
    same_type(country_code, str(national))


@given(st.sampled_from(EVERY_EXAMPLE), st.from_regex(r"[0-9]{1,6}", fullmatch=True))
def test_number_type_agrees_with_phonenumbers_on_other_tails(example: tuple[int, int],
                                                             tail: str) -> None:
    code, national = example
    body = str(national)
    changed = (body[: max(1, len(body) - len(tail))] + tail).lstrip("0") or "1"
    same_type(code, changed)


@pytest.mark.parametrize("raw", ["+012025550123", "000442079460000", "+0380501234567"])
def test_a_number_whose_country_code_would_start_with_0_is_refused(raw: str) -> None:
    """int("01...") is 1: such a number must not pass as +1 (or "0044..." after "00" as +44)."""
    from tikosms.numbers.parsing import InvalidNumber, parse

    with pytest.raises(InvalidNumber):
        parse(raw)
