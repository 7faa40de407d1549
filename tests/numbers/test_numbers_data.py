"""The shipped tables: complete for every region, consistent with each other, and covering
every carrier name libphonenumber gives in the 50 largest mobile markets."""

import csv
import io
import re
from collections import Counter
from importlib import resources

import phonenumbers
import pytest

from tikosms.numbers.coverage import TOP_MARKETS, CarrierRanges, carrier_ranges


def _read(name: str) -> list[dict[str, str]]:
    text = resources.files("tikosms.numbers").joinpath("data", name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


NETWORKS = _read("mccmnc.csv")
REGIONS = _read("regions.csv")
MCCS = _read("mcc.csv")
CURATED = _read("carrier_aliases.csv")
AUTO = _read("carrier_aliases_auto.csv")
KNOWN_NETWORKS = {(row["mcc"], row["mnc"]) for row in NETWORKS}


@pytest.fixture(scope="module")
def top_market_carriers() -> dict[tuple[str, str], CarrierRanges]:
    return carrier_ranges(TOP_MARKETS)


def test_every_carrier_name_of_the_top_markets_is_mapped_or_explained(
    top_market_carriers: dict[tuple[str, str], CarrierRanges],
) -> None:
    # Fails after a phonenumbers upgrade that brings new carrier names: run
    # `scripts/build_mccmnc.py --report` and add them to data/carrier_aliases.csv.
    listed = {(row["region"], row["carrier"]) for row in CURATED}
    missing = [
        f"{region},{name} (e.g. +{found.example})"
        for (region, name), found in top_market_carriers.items()
        if (region, name) not in listed
    ]
    assert not missing, "carrier names without an alias row:\n" + "\n".join(missing)


def test_curated_aliases_cover_most_mobile_ranges_of_the_top_markets(
    top_market_carriers: dict[tuple[str, str], CarrierRanges],
) -> None:
    # A floor, not a target: 81% of the carrier-table prefixes when the table was curated.
    mapped = {(row["region"], row["carrier"]) for row in CURATED if row["mnc"]}
    total = sum(found.prefixes for found in top_market_carriers.values())
    covered = sum(found.prefixes for key, found in top_market_carriers.items() if key in mapped)
    assert covered / total > 0.75


def test_top_markets_are_fifty_distinct_regions() -> None:
    assert len(set(TOP_MARKETS)) == 50
    assert set(TOP_MARKETS) <= phonenumbers.SUPPORTED_REGIONS


@pytest.mark.parametrize("row", CURATED + AUTO, ids=lambda r: f"{r['region']}-{r['carrier']}")
def test_alias_points_at_a_listed_network_or_says_why_not(row: dict[str, str]) -> None:
    if row["mnc"]:
        assert (row["mcc"], row["mnc"]) in KNOWN_NETWORKS
    else:
        assert not row["mcc"] and row["note"].strip(), "an unmapped name needs a reason"


def test_alias_rows_are_unique() -> None:
    keys = Counter((row["region"], row["carrier"]) for row in CURATED + AUTO)
    assert [key for key, n in keys.items() if n > 1] == []


def test_kyivstar_maps_to_its_live_mnc() -> None:
    # Kyivstar also holds 255-02 (ex-Beeline); 255-03 is the network its subscribers use.
    (kyivstar,) = [r for r in CURATED if (r["region"], r["carrier"]) == ("UA", "Kyivstar")]
    assert (kyivstar["mcc"], kyivstar["mnc"]) == ("255", "03")


def test_networks_have_well_formed_codes() -> None:
    for row in NETWORKS:
        assert re.fullmatch(r"[0-9]{3}", row["mcc"]), row
        assert re.fullmatch(r"[0-9]{2,3}", row["mnc"]), row


def test_mixed_mnc_lengths_are_kept_as_written() -> None:
    # 2- and 3-digit MNCs under one MCC are different networks: 405-85x is not 405-85.
    india_405 = {row["mnc"] for row in NETWORKS if row["mcc"] == "405"}
    assert {"03", "854", "872"} <= india_405
    assert ("255", "701") in KNOWN_NETWORKS and ("255", "01") in KNOWN_NETWORKS


def test_every_libphonenumber_region_has_a_country_name_and_an_mcc() -> None:
    regions = {row["region"]: row for row in REGIONS}
    assert set(regions) == phonenumbers.SUPPORTED_REGIONS
    held = {row["mcc"] for row in MCCS}
    for region, row in regions.items():
        assert row["country"], region
        assert row["mcc"] in held, region


def test_every_mcc_with_networks_has_a_country() -> None:
    held = {row["mcc"] for row in MCCS}
    national = {row["mcc"] for row in NETWORKS if re.fullmatch(r"[A-Z]{2}(/[A-Z]{2})*", row["iso"])}
    assert national <= held


def test_mcc_255_is_ukraine_and_tanzania_is_640() -> None:
    # The trap: +255 dials Tanzania, MCC 255 is Ukraine.
    mcc_country = {row["mcc"]: row["country"] for row in MCCS}
    region_mcc = {row["region"]: row["mcc"] for row in REGIONS}
    assert (mcc_country["255"], mcc_country["640"]) == ("Ukraine", "Tanzania")
    assert (region_mcc["UA"], region_mcc["TZ"]) == ("255", "640")
