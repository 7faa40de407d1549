"""Build the shipped MCC/MNC tables of `tikosms.numbers` from the npm package mcc-mnc-list.

Source: mcc-mnc-list 1.1.11 by Peter Bakondy (MIT licence), a copy of Wikipedia's "Mobile
country code" list. Fetch it through the npm registry and point this script at the tarball:

    cd "$(mktemp -d)" && npm pack mcc-mnc-list@1.1.11
    .venv/bin/python scripts/build_mccmnc.py --source /tmp/.../mcc-mnc-list-1.1.11.tgz

Without --source the script runs `npm pack` itself in a temporary directory.

Writes, under src/tikosms/numbers/data/:
    mccmnc.csv   mcc, mnc, iso, country, brand, operator, status: every network of the source
                 (bands, notes and malformed MNCs dropped; the MNC kept exactly as written,
                 so 2 or 3 digits as the network's own)
    mcc.csv      mcc, region, country: the country that holds each MCC
    regions.csv  region, country, mcc: every region libphonenumber knows, with its main MCC
                 and an English name
    carrier_aliases_auto.csv
                 region, carrier, mcc, mnc: libphonenumber carrier names that carrier_aliases.csv
                 does not list and that equal the brand or operator of exactly one operational
                 network of their region (punctuation and case ignored)

carrier_aliases.csv (libphonenumber carrier name -> MCC/MNC) is curated by hand and only read
here: `--report` lists the carrier names of the 50 largest markets that it does not cover yet,
with candidate networks, and checks that every alias points at a network of the source.
The carrier names come from the installed phonenumbers: rebuild after upgrading it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import types
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import phonenumbers
from phonenumbers.geocoder import _region_display_name  # the names libphonenumber ships

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "src" / "tikosms" / "numbers" / "data"
SOURCE_PACKAGE = "mcc-mnc-list"
SOURCE_VERSION = "1.1.11"
SOURCE_SHA1 = "f1256aab7ce7422f1d827701d5ae5a11443be4b2"  # the registry's shasum of the tarball

# English names where libphonenumber's (Java 8 locale) name is missing, dated or oddly cased.
NAME_OVERRIDES = {
    "AC": "Ascension Island",
    "TA": "Tristan da Cunha",
    "XK": "Kosovo",
    "CD": "Democratic Republic of the Congo",
    "CZ": "Czechia",
    "MK": "North Macedonia",
    "SZ": "Eswatini",
    "TL": "Timor-Leste",
    "RE": "Réunion",
    "ST": "São Tomé and Príncipe",
    "IM": "Isle of Man",
    "KN": "Saint Kitts and Nevis",
    "PM": "Saint Pierre and Miquelon",
    "SJ": "Svalbard and Jan Mayen",
    "TC": "Turks and Caicos Islands",
    "VC": "Saint Vincent and the Grenadines",
    "WF": "Wallis and Futuna",
    "MO": "Macau",
    "FM": "Micronesia",
    "VA": "Vatican City",
}

# Regions the source has no row for: the MCC their numbers are served under (ITU E.212).
REGION_MCC_OVERRIDES = {
    "AC": "658",  # Ascension: Saint Helena's MCC
    "TA": "658",  # Tristan da Cunha: Saint Helena's MCC
    "AX": "244",  # Åland: Finnish networks
    "SJ": "242",  # Svalbard: Norwegian networks
    "EH": "604",  # Western Sahara: Moroccan networks
    "IO": "995",  # Diego Garcia: the source lists Sure's network under 995
    "VA": "225",  # Vatican City: its own MCC, served by Italian networks
    # Assigned 742, but French Guiana's networks (Orange, SFR, Digicel) use the French
    # Antilles' 340.
    "GF": "340",
}

# MCCs shared by several regions, where counting rows does not pick the holder.
MCC_HOLDER_OVERRIDES = {
    "340": "GP",  # French Antilles (GP, MQ, BL, MF) and French Guiana
    "362": "CW",  # Curaçao, Sint Maarten, Caribbean Netherlands
    "505": "AU",  # Australia, with Christmas and Cocos Islands
    "647": "RE",  # Réunion and Mayotte
    "995": "IO",
}
MCC_NAME_OVERRIDES = {"340": "French Antilles"}

ALIAS_FIELDS = ["region", "carrier", "mcc", "mnc", "note"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="mcc-mnc-list .tgz, package dir or .json")
    parser.add_argument("--report", action="store_true", help="check carrier_aliases.csv")
    args = parser.parse_args(argv)

    records = load_source(args.source)
    networks = clean_networks(records)
    holders = mcc_holders(networks)
    regions = region_table(networks, holders)

    write_csv(
        DATA / "mccmnc.csv",
        ["mcc", "mnc", "iso", "country", "brand", "operator", "status"],
        networks,
    )
    write_csv(
        DATA / "mcc.csv",
        ["mcc", "region", "country"],
        [
            {"mcc": mcc, "region": region, "country": mcc_country(mcc, region)}
            for mcc, region in sorted(holders.items())
        ],
    )
    write_csv(DATA / "regions.csv", ["region", "country", "mcc"], regions)
    curated = read_aliases()
    auto = auto_aliases(networks, curated)
    write_csv(DATA / "carrier_aliases_auto.csv", ["region", "carrier", "mcc", "mnc"], auto)
    print(
        f"{len(records)} source rows -> {len(networks)} networks, {len(holders)} MCCs, "
        f"{len(regions)} regions; {len(curated)} curated and {len(auto)} generated aliases",
        file=sys.stderr,
    )
    if args.report:
        return report(networks)
    return 0


# -- source ---------------------------------------------------------------------------------


def load_source(source: Path | None) -> list[dict[str, str | None]]:
    if source is None:
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                ["npm", "pack", f"{SOURCE_PACKAGE}@{SOURCE_VERSION}"],
                cwd=tmp,
                capture_output=True,
                text=True,
            )
            if done.returncode:
                raise SystemExit(f"npm pack failed:\n{done.stderr}")
            return load_source(Path(tmp) / f"{SOURCE_PACKAGE}-{SOURCE_VERSION}.tgz")
    if source.is_dir():
        return _checked(
            json.loads((source / "package.json").read_text()),
            json.loads((source / "mcc-mnc-list.json").read_text()),
        )
    if source.suffix == ".json":
        return json.loads(source.read_text())  # a bare list: the version cannot be checked
    digest = hashlib.sha1(source.read_bytes()).hexdigest()
    if digest != SOURCE_SHA1:
        raise SystemExit(f"{source}: sha1 {digest}, expected {SOURCE_SHA1}")
    with tarfile.open(source) as tar:
        return _checked(
            json.load(_member(tar, "package/package.json")),
            json.load(_member(tar, "package/mcc-mnc-list.json")),
        )


def _member(tar: tarfile.TarFile, name: str) -> io.BufferedReader:
    member = tar.extractfile(name)
    if member is None:
        raise SystemExit(f"{name} missing from the tarball")
    return member  # type: ignore[return-value]


def _checked(package: dict[str, str], records: list[dict[str, str | None]]) -> list[dict]:
    if (package.get("name"), package.get("version")) != (SOURCE_PACKAGE, SOURCE_VERSION):
        raise SystemExit(
            f"expected {SOURCE_PACKAGE} {SOURCE_VERSION}, got "
            f"{package.get('name')} {package.get('version')}"
        )
    return records


def clean_networks(records: Iterable[dict[str, str | None]]) -> list[dict[str, str]]:
    """Keep national networks with a well-formed MCC and MNC, sorted by MCC, MNC, country."""
    rows = []
    for record in records:
        mcc, mnc = record.get("mcc") or "", record.get("mnc") or ""
        if not re.fullmatch(r"\d{3}", mcc) or not re.fullmatch(r"\d{2,3}", mnc):
            # Upstream oddities: "50144" (IMSI ranges under 208-50), "100 - 190", "?".
            print(f"skipped malformed {mcc}-{mnc} ({record.get('brand')})", file=sys.stderr)
            continue
        if record.get("type") == "Test":
            continue  # 001 and 999: test and private networks
        rows.append(
            {
                "mcc": mcc,
                "mnc": mnc,  # never padded: 255-01 and 405-854 are the networks' own strings
                "iso": record.get("countryCode") or "",
                "country": _clean(record.get("countryName")),
                "brand": _clean(record.get("brand")),
                "operator": _clean(record.get("operator")),
                "status": _clean(record.get("status")),
            }
        )
    rows.sort(key=lambda r: (r["mcc"], r["mnc"], r["iso"]))
    return rows


def _clean(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


# -- derived tables -------------------------------------------------------------------------


def mcc_holders(networks: list[dict[str, str]]) -> dict[str, str]:
    """MCC -> the region holding it: the region with most networks under it."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in networks:
        for region in _regions_of(row):
            counts[row["mcc"]][region] += 1
    holders = {}
    for mcc, by_region in counts.items():
        if mcc in MCC_HOLDER_OVERRIDES:
            holders[mcc] = MCC_HOLDER_OVERRIDES[mcc]
            continue
        (first, n1), *rest = by_region.most_common()
        if rest and rest[0][1] == n1:
            raise SystemExit(f"MCC {mcc}: tie between {first} and {rest[0][0]}; add an override")
        holders[mcc] = first
    for region, mcc in REGION_MCC_OVERRIDES.items():
        holders.setdefault(mcc, region)
    return holders


def region_table(networks: list[dict[str, str]], holders: dict[str, str]) -> list[dict[str, str]]:
    """Every libphonenumber region with its main MCC: the lowest it holds (US 310, IN 404,
    JP 440), else the one most of its networks use (Guam 310, Guernsey 234)."""
    used: dict[str, Counter[str]] = defaultdict(Counter)
    for row in networks:
        for region in _regions_of(row):
            used[region][row["mcc"]] += 1
    rows = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        held = sorted(mcc for mcc, holder in holders.items() if holder == region)
        if region in REGION_MCC_OVERRIDES:
            mcc = REGION_MCC_OVERRIDES[region]
        elif held:
            mcc = held[0]
        elif used[region]:
            mcc = min(used[region], key=lambda m: (-used[region][m], m))
        else:
            raise SystemExit(f"no MCC for region {region}; add it to REGION_MCC_OVERRIDES")
        rows.append({"region": region, "country": region_name(region), "mcc": mcc})
    return rows


def region_name(region: str) -> str:
    name = NAME_OVERRIDES.get(region) or _region_display_name(region, "en")
    if not name:
        raise SystemExit(f"no English name for region {region}; add it to NAME_OVERRIDES")
    return str(name)


def mcc_country(mcc: str, region: str) -> str:
    return MCC_NAME_OVERRIDES.get(mcc) or region_name(region)


def _regions_of(row: dict[str, str]) -> list[str]:
    # "AU/CC/CX", "YT/RE": one network list shared by several regions. "GE-AB" (Abkhazia) is
    # no ISO region and no libphonenumber region: kept in mccmnc.csv, ignored here.
    return [code for code in row["iso"].split("/") if re.fullmatch(r"[A-Z]{2}", code)]


def write_csv(path: Path, fields: list[str], rows: Iterable[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# -- carrier aliases ------------------------------------------------------------------------


def read_aliases() -> dict[tuple[str, str], dict[str, str]]:
    with (DATA / "carrier_aliases.csv").open(encoding="utf-8", newline="") as f:
        return {(r["region"], r["carrier"]): r for r in csv.DictReader(f)}


def auto_aliases(
    networks: list[dict[str, str]], curated: dict[tuple[str, str], dict[str, str]]
) -> list[dict[str, str]]:
    """Aliases for carrier names the curated table lacks, where the name is unambiguous."""
    ranges = coverage().carrier_ranges(phonenumbers.SUPPORTED_REGIONS)
    by_region: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in networks:
        if row["status"] == "Operational":
            for region in _regions_of(row):
                by_region[region].append(row)
    rows = []
    for region, name in ranges:
        if (region, name) in curated:
            continue
        key = _squash(name)
        codes = {
            (net["mcc"], net["mnc"])
            for net in by_region[region]
            if key in (_squash(net["brand"]), _squash(net["operator"]))
        }
        if len(codes) == 1:
            ((mcc, mnc),) = codes
            rows.append({"region": region, "carrier": name, "mcc": mcc, "mnc": mnc})
    return rows


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def coverage() -> types.ModuleType:
    """tikosms.numbers.coverage from this checkout, whether or not tikosms is installed."""
    sys.path.insert(0, str(ROOT / "src"))
    from tikosms.numbers import coverage

    return coverage


def report(networks: list[dict[str, str]]) -> int:
    """Print what carrier_aliases.csv lacks or gets wrong; exit status 1 if anything."""
    aliases = read_aliases()
    known: dict[tuple[str, str], dict[str, str]] = {}
    for net in networks:  # an MNC listed under several regions: prefer an operational row
        key = (net["mcc"], net["mnc"])
        if key not in known or net["status"] == "Operational":
            known[key] = net
    problems = 0
    for (region, name), row in sorted(aliases.items()):
        if row["mnc"] and (row["mcc"], row["mnc"]) not in known:
            print(f"{region} {name!r}: {row['mcc']}-{row['mnc']} is not in the source")
            problems += 1
        elif row["mnc"] and known[row["mcc"], row["mnc"]]["status"] != "Operational":
            net = known[row["mcc"], row["mnc"]]
            print(f"note: {region} {name!r} -> {row['mcc']}-{row['mnc']} is {net['status']}")
        if not row["mnc"] and not row["note"]:
            print(f"{region} {name!r}: unmapped without a reason")
            problems += 1

    top_markets = coverage().TOP_MARKETS
    ranges = coverage().carrier_ranges(top_markets)
    for (region, name), found in ranges.items():
        if (region, name) in aliases:
            continue
        problems += 1
        print(f"missing: {region},{name}  ({found.prefixes} prefixes, e.g. +{found.example})")
        for candidate in _candidates(networks, region, name):
            print(
                f"    {candidate['mcc']}-{candidate['mnc']} {candidate['brand']!r} "
                f"{candidate['operator']!r} {candidate['status']}"
            )
    mapped = [r for k, r in ranges.items() if aliases.get(k, {}).get("mnc")]
    print(
        f"top {len(top_markets)} markets: {len(ranges)} carrier names, {len(mapped)} mapped; "
        f"{sum(r.prefixes for r in mapped)} of {sum(r.prefixes for r in ranges.values())} "
        "mobile prefixes resolve to an MNC",
        file=sys.stderr,
    )
    return 1 if problems else 0


def _candidates(networks: list[dict[str, str]], region: str, name: str) -> list[dict[str, str]]:
    words = {w for w in re.findall(r"[a-z0-9]+", name.lower()) if len(w) > 2}
    found = []
    for row in networks:
        if region not in _regions_of(row):
            continue
        text = f"{row['brand']} {row['operator']}".lower()
        if name.lower() in text or words & set(re.findall(r"[a-z0-9]+", text)):
            found.append(row)
    return found


if __name__ == "__main__":
    sys.exit(main())
