"""split_text: coding choice, unit counts and greedy part boundaries."""

import pytest

from tikosms.text import GSM7, UCS2, SplitText, split_text

EMOJI = "😀"  # U+1F600: a surrogate pair, two UTF-16 units


@pytest.mark.parametrize(
    ("text", "data_coding", "parts", "units"),
    [
        # plain ASCII: 160 septets fit one part
        pytest.param("a" * 160, GSM7, ("a" * 160,), 160, id="ascii-160"),
        # plain ASCII: 161 septets need two, the first full at 153
        pytest.param("a" * 161, GSM7, ("a" * 153, "a" * 8), 161, id="ascii-161"),
        # 159 characters, one an extension (2 septets): exactly 160 septets, one part
        pytest.param(
            "a" * 158 + "€", GSM7, ("a" * 158 + "€",), 160, id="ext-159-chars-160-septets"
        ),
        # 160 characters with one extension: 161 septets, two parts
        pytest.param(
            "a" * 159 + "€", GSM7, ("a" * 153, "a" * 6 + "€"), 161, id="ext-160-chars-161-septets"
        ),
        # € at position 153 would need septets 153-154: it opens part 2, part 1 holds 152
        pytest.param(
            "a" * 152 + "€" + "b" * 20,
            GSM7,
            ("a" * 152, "€" + "b" * 20),
            174,
            id="euro-at-153-moves",
        ),
        # € at position 152 takes septets 152-153: part 1 is exactly full
        pytest.param(
            "a" * 151 + "€" + "b" * 20,
            GSM7,
            ("a" * 151 + "€", "b" * 20),
            173,
            id="euro-at-152-fills",
        ),
        # only extension characters: 80 of them are 160 septets, one part
        pytest.param("{" * 80, GSM7, ("{" * 80,), 160, id="ext-only-160"),
        # 81 extension characters: 76 fill 152 septets, the 77th would straddle the boundary
        pytest.param("{" * 81, GSM7, ("{" * 76, "{" * 5), 162, id="ext-only-straddle"),
        # two exactly full GSM-7 parts
        pytest.param("a" * 306, GSM7, ("a" * 153, "a" * 153), 306, id="gsm-two-full-parts"),
        # one septet more opens a third part
        pytest.param(
            "a" * 307, GSM7, ("a" * 153, "a" * 153, "a"), 307, id="gsm-one-over-two-parts"
        ),
        # Cyrillic: 70 units fit one part
        pytest.param("ж" * 70, UCS2, ("ж" * 70,), 70, id="cyrillic-70"),
        # Cyrillic: 71 units need two, the first full at 67
        pytest.param("ж" * 71, UCS2, ("ж" * 67, "ж" * 4), 71, id="cyrillic-71"),
        # two exactly full UCS-2 parts
        pytest.param("ж" * 134, UCS2, ("ж" * 67, "ж" * 67), 134, id="ucs2-two-full-parts"),
        # one unit more opens a third part
        pytest.param("ж" * 135, UCS2, ("ж" * 67, "ж" * 67, "ж"), 135, id="ucs2-one-over-two-parts"),
        # 35 emoji are 70 units: one part
        pytest.param(EMOJI * 35, UCS2, (EMOJI * 35,), 70, id="emoji-70"),
        # 36 emoji are 72 units: 33 fill 66, the 34th would need units 67-68
        pytest.param(EMOJI * 36, UCS2, (EMOJI * 33, EMOJI * 3), 72, id="emoji-72"),
        # the 67th unit would be a high surrogate: the whole pair moves to part 2
        pytest.param(
            "ж" * 66 + EMOJI + "ж" * 10,
            UCS2,
            ("ж" * 66, EMOJI + "ж" * 10),
            78,
            id="high-surrogate-at-unit-67",
        ),
        # a surrogate pair ending exactly on unit 67 stays in part 1
        pytest.param(
            "ж" * 65 + EMOJI + "ж" * 10,
            UCS2,
            ("ж" * 65 + EMOJI, "ж" * 10),
            77,
            id="pair-ends-at-unit-67",
        ),
        # one non-GSM character switches the whole 101-character text to UCS-2
        pytest.param("a" * 100 + "ç", UCS2, ("a" * 67, "a" * 33 + "ç"), 101, id="one-non-gsm-char"),
        # a typographic apostrophe in an otherwise GSM text: UCS-2, one part
        pytest.param("Don’t forget!", UCS2, ("Don’t forget!",), 13, id="typographic-apostrophe"),
        # an extension character counts one unit in UCS-2 (no escape there)
        pytest.param("€" * 70 + "ж", UCS2, ("€" * 67, "€" * 3 + "ж"), 71, id="euro-in-ucs2"),
        # a single character
        pytest.param("x", GSM7, ("x",), 1, id="single-char"),
    ],
)
def test_split_text(text: str, data_coding: int, parts: tuple[str, ...], units: int) -> None:
    expected_encoding = "GSM-7" if data_coding == GSM7 else "UCS-2"
    assert split_text(text) == SplitText(
        data_coding=data_coding, encoding=expected_encoding, parts=parts, units=units
    )


def test_split_text_rejects_empty_text() -> None:
    with pytest.raises(ValueError, match="empty"):
        split_text("")


def test_split_text_rejects_a_lone_surrogate() -> None:
    # json.loads('"\\ud83d"') yields such a string; UTF-16 cannot carry it.
    with pytest.raises(ValueError, match="surrogate"):
        split_text("hi \ud83d")


def test_split_text_result_is_immutable() -> None:
    result = split_text("hello")
    with pytest.raises(AttributeError):
        result.units = 3  # type: ignore[misc]
