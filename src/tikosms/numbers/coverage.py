"""Which carrier names libphonenumber gives for the mobile ranges of a country.

libphonenumber ships a prefix -> carrier-name table (`phonenumbers.carrierdata`). The names are
free text, so the shipped alias table (`data/carrier_aliases.csv`) has to name each of them
explicitly. This module lists the names that actually come out of `carrier.name_for_number` for
valid mobile numbers of the given regions, so that a test (and `scripts/build_mccmnc.py
--report`) can check the alias table against the installed phonenumbers instead of a guess.

It is a development and test aid: nothing on the sending path imports it.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass

import phonenumbers
from phonenumbers import carrier
from phonenumbers.carrierdata import CARRIER_DATA, CARRIER_LONGEST_PREFIX

# The 50 largest mobile markets by subscriptions (GSMA/ITU figures, mid-2020s), whose carrier
# names the alias table must cover completely.
TOP_MARKETS: tuple[str, ...] = (
    "CN", "IN", "US", "ID", "BR", "RU", "PK", "NG", "BD", "JP",
    "PH", "VN", "MX", "DE", "EG", "TR", "IR", "TH", "ET", "FR",
    "GB", "IT", "ZA", "SA", "KR", "CO", "AR", "PL", "UA", "MY",
    "DZ", "UZ", "KE", "TZ", "ES", "MA", "IQ", "CA", "PE", "GH",
    "VE", "AF", "NP", "CI", "SD", "MM", "KZ", "AU", "CL", "TW",
)  # fmt: skip

# Digits tried after a prefix to reach a valid number: each digit repeated, then a few seeded
# random tails (deterministic per prefix, so the result never changes between runs).
_RANDOM_TAILS = 6


@dataclass(frozen=True, slots=True)
class CarrierRanges:
    """One carrier name of one region: how many carrier-table prefixes give it, and a sample."""

    region: str
    carrier: str
    prefixes: int
    example: str  # a valid mobile number (digits) for which name_for_number gives `carrier`


def carrier_ranges(regions: Collection[str]) -> dict[tuple[str, str], CarrierRanges]:
    """Map (region, carrier name) to its ranges for every name reachable in `regions`.

    A prefix counts when some valid number of one of `regions` starts with it, is of a mobile
    type (what `name_for_number` requires) and has no longer prefix in the table; a prefix that
    no tried completion reaches is left out (it is either not mobile or shadowed).
    """
    wanted = set(regions)
    codes = {
        str(code): tuple(found)
        for code, found in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items()
        if wanted.intersection(found)
    }
    counts: dict[tuple[str, str], int] = {}
    examples: dict[tuple[str, str], str] = {}
    for prefix in CARRIER_DATA:
        code = next((prefix[:n] for n in (1, 2, 3) if prefix[:n] in codes), None)
        if code is None:
            continue
        hit = _reach(prefix, code, codes[code], wanted)
        if hit is None:
            continue
        key, number = hit
        counts[key] = counts.get(key, 0) + 1
        examples.setdefault(key, number)
    return {
        key: CarrierRanges(key[0], key[1], counts[key], examples[key]) for key in sorted(counts)
    }


def _reach(
    prefix: str, code: str, code_regions: tuple[str, ...], wanted: set[str]
) -> tuple[tuple[str, str], str] | None:
    lengths: set[int] = set()
    for region in code_regions:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if metadata is not None and metadata.general_desc is not None:
            lengths.update(metadata.general_desc.possible_length)
    national = prefix[len(code) :]
    rng = random.Random(prefix)
    tails = [str(d) * 17 for d in range(10)]
    tails += ["".join(rng.choices("0123456789", k=17)) for _ in range(_RANDOM_TAILS)]
    for tail in tails:
        for length in sorted(lengths, reverse=True):  # full-length examples first
            if length < len(national):
                continue
            number = code + (national + tail)[:length]
            if any(number[:n] in CARRIER_DATA for n in range(len(prefix) + 1, _longest(number))):
                continue  # a longer prefix owns this number
            try:
                parsed = phonenumbers.parse("+" + number)
            except phonenumbers.NumberParseException:
                continue
            found = phonenumbers.region_code_for_number(parsed)
            if found not in wanted or not phonenumbers.is_valid_number(parsed):
                continue
            name = carrier.name_for_number(parsed, "en")
            if found and name:
                return (found, name), number
    return None


def _longest(number: str) -> int:
    return min(len(number), CARRIER_LONGEST_PREFIX) + 1
