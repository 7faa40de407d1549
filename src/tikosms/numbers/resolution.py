"""From a number to where it goes: country, MCC and, when known, MNC."""

from __future__ import annotations

from dataclasses import dataclass

from tikosms.numbers import shipped
from tikosms.numbers.parsing import InvalidNumber, parse
from tikosms.numbers.plan import NumberingPlan

# libphonenumber's carrier table has no key longer than this (carrierdata.CARRIER_LONGEST_PREFIX;
# a test checks they agree), so the first 9 digits decide the carrier.
_CARRIER_PREFIX = 9


@dataclass(frozen=True, slots=True)
class Destination:
    number: str  # digits only, E.164 without "+"
    region: str  # ISO 3166 alpha-2, "UA"
    country: str  # English country name, "Ukraine"
    mcc: str  # "255"
    mnc: str | None  # the network's own MNC, 2 or 3 digits ("01", "854"); None: operator unknown

    @property
    def mccmnc(self) -> str:
        """MCC and MNC run together ("25501"), or the MCC alone when the MNC is unknown."""
        return self.mcc + (self.mnc or "")


def resolve(raw: str, plan: NumberingPlan | None = None) -> Destination:
    """Normalise `raw` (see `normalise`) and find its country and network.

    In order: the operator's numbering plan (longest prefix), then the shipped data (the
    carrier libphonenumber names for the number's range, mapped to an MNC; only for mobile
    types), else the country's MCC with no MNC. Raises InvalidNumber.
    """
    number = parse(raw)
    country = shipped.country_for_region(number.region) or number.region
    if plan is not None:
        hit = plan.lookup(number.digits)
        if hit is not None:
            return Destination(number.digits, number.region, country, hit[0], hit[1])
    if number.mobile:
        network = shipped.operator_for_prefix(number.region, number.digits[:_CARRIER_PREFIX])
        if network is not None:
            return Destination(number.digits, number.region, country, network[0], network[1])
    mcc = shipped.mcc_for_region(number.region)
    if mcc is None:
        # Only when phonenumbers knows a region that data/regions.csv does not (a newer
        # phonenumbers than the data was built with): rebuild the data.
        raise InvalidNumber(f"No mobile country code is known for {country}.")
    return Destination(number.digits, number.region, country, mcc, None)
