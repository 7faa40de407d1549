"""The operator's numbering plan: CSV import and longest-prefix lookup."""

import pytest

from tikosms.numbers import NumberingPlan, parse_numbering_csv


def test_parse_numbering_csv_reads_rows() -> None:
    text = "prefix,mcc,mnc\n38050,255,01\n3805012,255,07\n255,640,\n"
    assert parse_numbering_csv(text) == [
        ("38050", "255", "01"),
        ("3805012", "255", "07"),
        ("255", "640", None),  # empty mnc: the country, no particular network
    ]


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        ("prefix,mcc,mnc\n", []),  # header only
        ("\ufeffprefix,mcc,mnc\n38050,255,01\n", [("38050", "255", "01")]),  # Excel's BOM
        ("Prefix , MCC , MNC\n38050,255,01\n", [("38050", "255", "01")]),  # header spelling
        ("mnc,prefix,mcc\n01,38050,255\n", [("38050", "255", "01")]),  # columns in any order
        ("prefix,mcc,mnc\r\n38050,255,01\r\n", [("38050", "255", "01")]),  # CRLF line ends
        ("prefix,mcc,mnc\n\n38050,255,01\n\n", [("38050", "255", "01")]),  # blank lines
        ("prefix,mcc,mnc\n 38050 , 255 , 01 \n", [("38050", "255", "01")]),  # padded fields
        ("prefix,mcc,mnc\n91701,405,872\n", [("91701", "405", "872")]),  # 3-digit MNC
    ],
)
def test_parse_numbering_csv_is_lenient_about_layout(text: str, rows: list) -> None:
    assert parse_numbering_csv(text) == rows


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "line 1: the file is empty"),  # nothing at all
        ("prefix,mcc\n38050,255\n", "line 1: expected the header prefix,mcc,mnc"),  # column short
        ("number,mcc,mnc\n38050,255,01\n", "line 1: expected the header"),  # wrong column
        ("prefix,mcc,mnc\n+38050,255,01\n", "line 2: prefix must be 1 to 15 digits"),  # '+'
        ("prefix,mcc,mnc\n,255,01\n", "line 2: prefix must be 1 to 15 digits"),  # empty prefix
        ("prefix,mcc,mnc\n3805012345678901,255,01\n", "line 2: prefix must be"),  # 16 digits
        ("prefix,mcc,mnc\n38050,25,01\n", "line 2: mcc must be 3 digits"),  # 2-digit MCC
        ("prefix,mcc,mnc\n38050,2555,01\n", "line 2: mcc must be 3 digits"),  # 4-digit MCC
        ("prefix,mcc,mnc\n38050,255,1\n", "line 2: mnc must be empty or 2 to 3 digits"),  # 1
        ("prefix,mcc,mnc\n38050,255,0001\n", "line 2: mnc must be empty or 2 to 3"),  # 4 digits
        ("prefix,mcc,mnc\n38050,255,O1\n", "line 2: mnc must be"),  # letter O for zero
        ("prefix,mcc,mnc\n38050,255\n", "line 2: expected 3 fields, found 2"),  # short row
        ("prefix,mcc,mnc\n38050,255,01,x\n", "line 2: expected 3 fields, found 4"),  # long row
        (  # the same prefix twice
            "prefix,mcc,mnc\n38050,255,01\n38050,255,02\n",
            "line 3: prefix 38050 is already on line 2",
        ),
        ("prefix,mcc,mnc\n38050,255,01\n\n\n38067,25,03\n", "line 5: mcc"),  # blank lines count
        ("prefix,mcc,mnc\n38050,255,01\n38067,x,03\n38063,y,06\n", "line 3: mcc"),  # first bad
    ],
)
def test_parse_numbering_csv_names_the_first_bad_line(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_numbering_csv(text)


def test_plan_longest_prefix_wins() -> None:
    plan = NumberingPlan([("380", "255", None), ("38050", "255", "01"), ("3805012", "255", "07")])
    assert plan.lookup("380501234567") == ("255", "07")
    assert plan.lookup("380509999999") == ("255", "01")
    assert plan.lookup("380671234567") == ("255", None)
    assert plan.lookup("4915123456789") is None


def test_plan_prefix_longer_than_the_number_does_not_match() -> None:
    assert NumberingPlan([("3805012345678", "255", "01")]).lookup("38050") is None


def test_plan_later_row_replaces_an_earlier_one() -> None:
    plan = NumberingPlan([("38050", "255", "01"), ("38050", "255", "99")])
    assert (len(plan), plan.lookup("380501234567")) == (1, ("255", "99"))


def test_plan_treats_an_empty_mnc_as_none() -> None:
    assert NumberingPlan([("380", "255", "")]).lookup("380501234567") == ("255", None)


def test_plan_refuses_a_malformed_row() -> None:
    with pytest.raises(ValueError, match="mcc must be 3 digits"):
        NumberingPlan([("38050", "25", "01")])


def test_empty_plan_matches_nothing() -> None:
    assert NumberingPlan([]).lookup("380501234567") is None


def test_plan_accepts_parsed_csv_rows() -> None:
    plan = NumberingPlan(parse_numbering_csv("prefix,mcc,mnc\n91701,405,872\n"))
    assert plan.lookup("917012345678") == ("405", "872")
