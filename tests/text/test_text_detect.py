"""GSM-7 detection, checked against the gsm0338 codec as an independent table."""

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)
import pytest

from tikosms.text import is_gsm7

ESCAPE = 0x1B


def oracle_alphabet() -> set[str]:
    """Every character the gsm0338 codec maps, basic and extension, without the escape itself.

    The codec lists 0x1B as a character (U+001B); on the air it is the switch to the
    extension table, so a text containing U+001B is not GSM-7 for us.
    """
    basic = {bytes([code]).decode("gsm03.38") for code in range(0x80) if code != ESCAPE}
    extension = set()
    for code in range(0x80):
        try:
            extension.add(bytes([ESCAPE, code]).decode("gsm03.38"))
        except UnicodeDecodeError:
            continue
    return basic | extension


def test_gsm7_alphabet_matches_the_gsm0338_tables() -> None:
    ours = {chr(point) for point in range(0x10000) if is_gsm7(chr(point))}
    assert ours == oracle_alphabet()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, world!", True),  # plain ASCII
        ("", True),  # vacuously: no character outside the alphabet
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà", True),  # basic table beyond ASCII
        ("^{}\\[~]|€\f", True),  # the whole extension table
        ("line\r\nbreak", True),  # CR and LF are basic characters
        ("Don’t", False),  # typographic apostrophe U+2019
        ("ç", False),  # small c cedilla: only the capital Ç is in the table
        ("Привет", False),  # Cyrillic
        ("ok 😀", False),  # emoji, beyond the BMP
        ("a\x1bb", False),  # the escape itself is not a character
        ("`", False),  # grave accent is not in the default alphabet
        ("\u2126", False),  # OHM SIGN, a lookalike of Ω (U+03A9), is not GSM
        ("\u00a0", False),  # no-break space
    ],
)
def test_is_gsm7(text: str, expected: bool) -> None:
    assert is_gsm7(text) is expected
