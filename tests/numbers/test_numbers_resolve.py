"""resolve(): country and MCC/MNC of a number, from the operator's plan, shipped data or the
country alone."""

import dataclasses

import phonenumbers
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from phonenumbers import carrier
from phonenumbers.carrierdata import CARRIER_LONGEST_PREFIX

from tikosms.numbers import (
    Destination,
    InvalidNumber,
    NumberingPlan,
    country_for_mcc,
    mcc_for_region,
    resolution,
    resolve,
    shipped,
)


@pytest.mark.parametrize(
    ("raw", "region", "country", "mcc", "mnc"),
    [
        ("+380501234567", "UA", "Ukraine", "255", "01"),  # Vodafone Ukraine (required)
        ("380671234567", "UA", "Ukraine", "255", "03"),  # Kyivstar: its live 03, not 02 (required)
        ("+380631234567", "UA", "Ukraine", "255", "06"),  # lifecell
        ("+49 151 23456789", "DE", "Germany", "262", "01"),  # Telekom
        ("+49 176 12345678", "DE", "Germany", "262", "03"),  # O2 (E-Plus's 262-03)
        ("+91 70123 45678", "IN", "India", "405", "872"),  # Jio: a 3-digit MNC under 405
        ("+91 98123 45678", "IN", "India", "404", "11"),  # Idea, now Vi: 2-digit under 404
        ("+255 712 345 678", "TZ", "Tanzania", "640", "02"),  # +255 dials Tanzania: MCC 640
        ("+255 754 123 456", "TZ", "Tanzania", "640", "04"),  # Vodacom Tanzania
        ("+44 7400 123456", "GB", "United Kingdom", "234", "20"),  # Three UK
        ("+44 7911 123456", "GG", "Guernsey", "234", "50"),  # +44 shared: a Guernsey JT range
        ("+7 701 123 4567", "KZ", "Kazakhstan", "401", "02"),  # +7 shared: Kcell, MCC 401
        ("+86 130 1234 5678", "CN", "China", "460", "01"),  # China Unicom
        ("+55 11 96168 0000", "BR", "Brazil", "724", "05"),  # Claro Brasil
        ("+234 703 123 4567", "NG", "Nigeria", "621", "30"),  # MTN Nigeria
        ("+1 415 555 2671", "US", "United States", "310", None),  # no carrier data: MCC only
        ("+52 55 1234 5678", "MX", "Mexico", "334", None),  # no carrier data for Mexico
        ("+380 44 123 4567", "UA", "Ukraine", "255", None),  # fixed line: no network
        ("+91 70310 00000", "IN", "India", "404", None),  # Aircel: known unmapped (defunct)
        ("+7 916 123 4567", "RU", "Russia", "250", None),  # range without a carrier name
    ],
)
def test_resolve_finds_country_and_network(
    raw: str, region: str, country: str, mcc: str, mnc: str | None
) -> None:
    destination = resolve(raw)
    assert (destination.region, destination.country, destination.mcc, destination.mnc) == (
        region,
        country,
        mcc,
        mnc,
    )


def test_required_mccmnc_of_the_two_ukrainian_numbers() -> None:
    assert resolve("+380501234567").mccmnc == "25501"
    assert resolve("380671234567").mccmnc == "25503"


def test_mccmnc_keeps_a_three_digit_mnc_as_is() -> None:
    assert resolve("+91 70123 45678").mccmnc == "405872"


def test_mccmnc_is_the_mcc_alone_when_the_operator_is_unknown() -> None:
    assert resolve("+1 415 555 2671").mccmnc == "310"


def test_resolve_returns_the_normalised_number() -> None:
    assert resolve("00 380 (50) 123-45-67").number == "380501234567"


def test_resolve_refuses_an_invalid_number() -> None:
    with pytest.raises(InvalidNumber):
        resolve("+38050123")


def test_destination_is_immutable() -> None:
    destination = resolve("+380501234567")
    with pytest.raises(dataclasses.FrozenInstanceError):
        destination.mnc = "02"  # type: ignore[misc]


# -- the operator's numbering plan -----------------------------------------------------------

_PLAN = NumberingPlan(
    [
        ("380", "255", None),  # all of Ukraine: country only
        ("38050", "255", "99"),  # a whole operator code
        ("3805012", "255", "07"),  # a sub-range moved to another network
    ]
)


@pytest.mark.parametrize(
    ("raw", "mccmnc"),
    [
        ("+380501234567", "25507"),  # longest prefix (3805012) wins
        ("+380509876543", "25599"),  # next longest (38050)
        ("+380671234567", "255"),  # plan before shipped data, even a country-wide row
        ("+49 151 23456789", "26201"),  # no plan row: shipped data
        ("+1 415 555 2671", "310"),  # no plan row, no shipped network: MCC only
    ],
)
def test_numbering_plan_comes_first_and_longest_prefix_wins(raw: str, mccmnc: str) -> None:
    assert resolve(raw, _PLAN).mccmnc == mccmnc


def test_numbering_plan_applies_to_fixed_lines_too() -> None:
    plan = NumberingPlan([("38044", "255", "21")])
    assert resolve("+380 44 123 4567", plan).mccmnc == "25521"


def test_numbering_plan_keeps_the_country_of_the_number() -> None:
    destination = resolve("+380501234567", NumberingPlan([("38050", "999", "99")]))
    assert (destination.region, destination.country, destination.mcc) == ("UA", "Ukraine", "999")


# -- shipped tables ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "mcc"),
    [
        ("UA", "255"),  # Ukraine
        ("TZ", "640"),  # Tanzania, whose dialling code is 255
        ("US", "310"),  # lowest of 310-316
        ("IN", "404"),  # 404 before 405
        ("GB", "234"),
        ("GG", "234"),  # Guernsey uses the UK's MCC
        ("GF", "340"),  # French Guiana's networks use 340, not its assigned 742
        ("ua", "255"),  # case does not matter
        ("XX", None),  # no such region
    ],
)
def test_mcc_for_region(region: str, mcc: str | None) -> None:
    assert mcc_for_region(region) == mcc


@pytest.mark.parametrize(
    ("mcc", "country"),
    [
        ("255", "Ukraine"),  # not Tanzania: MCCs are not dialling codes
        ("640", "Tanzania"),
        ("311", "United States"),  # a secondary MCC
        ("405", "India"),
        ("340", "French Antilles"),
        ("999", None),  # reserved
    ],
)
def test_country_for_mcc(mcc: str, country: str | None) -> None:
    assert country_for_mcc(mcc) == country


def test_carrier_prefix_length_matches_libphonenumber() -> None:
    # resolve() caches shipped lookups per prefix of this length; longer keys would break it.
    assert resolution._CARRIER_PREFIX == CARRIER_LONGEST_PREFIX


def _mobile_example(region: str) -> str:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    example = example or phonenumbers.example_number(region)
    assert example is not None
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]


@given(
    st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)),
    st.from_regex(r"[0-9]{1,6}", fullmatch=True),
)
def test_carrier_name_walk_agrees_with_libphonenumber(region: str, tail: str) -> None:
    base = _mobile_example(region)
    code = str(phonenumbers.country_code_for_region(region))
    # the tail replaces digits of the national number only, never the country code
    assume(len(base) - len(tail) >= len(code))
    digits = base[: len(base) - len(tail)] + tail
    number = phonenumbers.parse("+" + digits)
    assert shipped.carrier_name(digits) == carrier.name_for_valid_number(number, "en")


@pytest.mark.parametrize("region", sorted(phonenumbers.SUPPORTED_REGIONS))
def test_every_regions_example_resolves_to_an_mcc(region: str) -> None:
    destination = resolve(_mobile_example(region))
    # Territories sharing a code (AX with FI, VA with IT) may share example numbers.
    code = phonenumbers.country_code_for_region(region)
    assert destination.region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]
    assert len(destination.mcc) == 3 and destination.country
    assert country_for_mcc(destination.mcc) is not None


def test_destination_fields() -> None:
    assert [f.name for f in dataclasses.fields(Destination)] == [
        "number",
        "region",
        "country",
        "mcc",
        "mnc",
    ]
