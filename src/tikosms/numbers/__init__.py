"""Phone numbers: normalisation, validation and offline resolution to a country and MCC/MNC.

    normalise("+380 (50) 123-45-67")  -> "380501234567"
    resolve("+380501234567")          -> Destination(number="380501234567", region="UA",
                                          country="Ukraine", mcc="255", mnc="01")

Validity is libphonenumber's (`phonenumbers`). The MCC/MNC comes, in this order, from the
operator's own numbering plan (`NumberingPlan`), from the shipped data (the range's original
carrier as libphonenumber names it, mapped to an MNC by `data/carrier_aliases.csv`), else from
the country alone (MCC, no MNC). Number portability is not seen: a ported number resolves to
the network its range was allocated to. See docs/numbers.md.
"""

from tikosms.numbers.parsing import InvalidNumber, normalise
from tikosms.numbers.plan import NumberingPlan, parse_numbering_csv
from tikosms.numbers.resolution import Destination, resolve
from tikosms.numbers.shipped import country_for_mcc, mcc_for_region

__all__ = [
    "Destination",
    "InvalidNumber",
    "NumberingPlan",
    "country_for_mcc",
    "mcc_for_region",
    "normalise",
    "parse_numbering_csv",
    "resolve",
]
