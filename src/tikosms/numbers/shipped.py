"""The MCC/MNC data shipped with the package, loaded on first use and kept for the process.

data/regions.csv         region -> English country name, main MCC      (built, see below)
data/mcc.csv             MCC -> country holding it                      (built)
data/mccmnc.csv          every network of the source list               (built; reference only)
data/carrier_aliases.csv (region, libphonenumber carrier name) -> MCC/MNC, curated by hand
data/carrier_aliases_auto.csv  the same for names that match one network's brand exactly (built)

The built files come from mcc-mnc-list 1.1.11 (MIT, from Wikipedia's list) through
scripts/build_mccmnc.py; docs/numbers.md says how to rebuild and curate them.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Iterator, Mapping
from importlib import resources

_DATA = resources.files("tikosms.numbers").joinpath("data")


def mcc_for_region(region: str) -> str | None:
    """Main MCC of an ISO 3166 alpha-2 region ("UA" -> "255", "US" -> "310", "IN" -> "404")."""
    entry = _regions().get(region.upper())
    return entry[1] if entry else None


def country_for_mcc(mcc: str) -> str | None:
    """English name of the country holding an MCC ("255" -> "Ukraine"), None if unknown."""
    return _mcc_countries().get(mcc)


def country_for_region(region: str) -> str | None:
    entry = _regions().get(region.upper())
    return entry[0] if entry else None


@functools.lru_cache(maxsize=1 << 16)
def operator_for_prefix(region: str, prefix: str) -> tuple[str, str] | None:
    """MCC/MNC of the carrier libphonenumber names for numbers starting with `prefix`.

    `prefix` is the number's first CARRIER_LONGEST_PREFIX digits (9): libphonenumber's carrier
    table has no longer keys, so every number sharing them shares the answer, and a campaign
    of 100,000 numbers costs a few thousand lookups.
    """
    name = carrier_name(prefix)
    return mccmnc_for_carrier(region, name) if name else None


@functools.lru_cache(maxsize=4096)
def mccmnc_for_carrier(region: str, carrier: str) -> tuple[str, str] | None:
    """(MCC, MNC) for a libphonenumber carrier name in a region, None when not mapped."""
    return _aliases().get((region, carrier))


def carrier_name(digits: str) -> str:
    """The English carrier name libphonenumber gives for `digits`, or "".

    The same longest-prefix walk as `phonenumbers.carrier.name_for_valid_number`, on the
    digits directly (it formats the number to E.164 first, which costs more than the walk).
    """
    data, longest = _carrier_table()
    for length in range(min(len(digits), longest), 0, -1):
        entry = data.get(digits[:length])
        if entry is not None:
            name = entry.get("en")
            if name is not None:
                return name
    return ""


# -- loading ------------------------------------------------------------------------------


@functools.cache
def _carrier_table() -> tuple[Mapping[str, Mapping[str, str]], int]:
    # Imported here, not at module import: the table is about 1 MB of Python.
    from phonenumbers.carrierdata import CARRIER_DATA, CARRIER_LONGEST_PREFIX

    return CARRIER_DATA, CARRIER_LONGEST_PREFIX


@functools.cache
def _regions() -> dict[str, tuple[str, str]]:
    return {row["region"]: (row["country"], row["mcc"]) for row in _rows("regions.csv")}


@functools.cache
def _mcc_countries() -> dict[str, str]:
    return {row["mcc"]: row["country"] for row in _rows("mcc.csv")}


@functools.cache
def _aliases() -> dict[tuple[str, str], tuple[str, str] | None]:
    table: dict[tuple[str, str], tuple[str, str] | None] = {}
    # The generated exact matches first, so that the curated table overrides them; a curated
    # row without an MNC ("known unmapped") overrides with None.
    for name in ("carrier_aliases_auto.csv", "carrier_aliases.csv"):
        for row in _rows(name):
            key = (row["region"], row["carrier"])
            table[key] = (row["mcc"], row["mnc"]) if row["mnc"] else None
    return table


def _rows(name: str) -> Iterator[dict[str, str]]:
    text = _DATA.joinpath(name).read_text(encoding="utf-8")
    return csv.DictReader(io.StringIO(text))
