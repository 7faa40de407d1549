"""Property tests for split_text and the part codec."""

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)
from hypothesis import given
from hypothesis import strategies as st

from tikosms.text import GSM7, UCS2, decode_part, encode_part, is_gsm7, split_text

GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = "^{}\\[~]|€\f"
LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}

# Mostly basic characters with extensions often enough to meet part boundaries.
gsm_texts = st.text(
    alphabet=st.one_of(st.sampled_from(GSM_BASIC), st.sampled_from(GSM_EXTENSION)),
    min_size=1,
    max_size=700,
)
# GSM text sprinkled with Cyrillic and emoji, so surrogate pairs land on boundaries.
mixed_texts = st.text(
    alphabet=st.one_of(st.sampled_from(GSM_BASIC + GSM_EXTENSION), st.sampled_from("жЩё😀🎉𝄞")),
    min_size=1,
    max_size=400,
)
# Anything Unicode can encode (hypothesis leaves out lone surrogates by default).
any_texts = st.text(min_size=1, max_size=400)
texts = st.one_of(gsm_texts, mixed_texts, any_texts)


def units_of(part: str, data_coding: int) -> int:
    # One octet per septet (escapes included), two octets per UTF-16 unit.
    data = encode_part(part, data_coding)
    return len(data) if data_coding == GSM7 else len(data) // 2


@given(texts)
def test_parts_join_to_the_text(text: str) -> None:
    assert "".join(split_text(text).parts) == text


@given(texts)
def test_no_part_is_empty_or_over_its_limit(text: str) -> None:
    result = split_text(text)
    single, concat = LIMITS[result.data_coding]
    limit = single if len(result.parts) == 1 else concat
    for part in result.parts:
        assert 0 < units_of(part, result.data_coding) <= limit


@given(texts)
def test_single_part_iff_units_within_single_limit(text: str) -> None:
    result = split_text(text)
    single, _ = LIMITS[result.data_coding]
    assert (len(result.parts) == 1) == (result.units <= single)


@given(texts)
def test_units_are_the_sum_over_parts(text: str) -> None:
    result = split_text(text)
    assert result.units == sum(units_of(part, result.data_coding) for part in result.parts)


@given(texts)
def test_parts_are_filled_greedily(text: str) -> None:
    # Every part but the last is closed only because its successor's first character
    # (one or two units) would not fit.
    result = split_text(text)
    _, concat = LIMITS[result.data_coding]
    for part, following in zip(result.parts, result.parts[1:], strict=False):
        used = units_of(part, result.data_coding)
        assert used + units_of(following[0], result.data_coding) > concat


@given(texts)
def test_coding_is_gsm7_iff_every_character_is(text: str) -> None:
    result = split_text(text)
    assert (result.data_coding == GSM7) == is_gsm7(text)
    assert result.encoding == ("GSM-7" if result.data_coding == GSM7 else "UCS-2")


@given(texts)
def test_encoded_parts_concatenate_to_the_encoded_text(text: str) -> None:
    # No part boundary falls inside an escape sequence or a surrogate pair.
    result = split_text(text)
    encoded = b"".join(encode_part(part, result.data_coding) for part in result.parts)
    assert encoded == encode_part(text, result.data_coding)


@given(texts)
def test_each_part_round_trips_through_its_bytes(text: str) -> None:
    result = split_text(text)
    for part in result.parts:
        assert decode_part(encode_part(part, result.data_coding), result.data_coding) == part


@given(st.text(max_size=200).filter(lambda text: "\x1b" not in text))
def test_is_gsm7_agrees_with_the_gsm0338_codec(text: str) -> None:
    # The codec lists U+001B (the escape) as a character; we do not, hence the filter.
    try:
        text.encode("gsm03.38")
    except UnicodeEncodeError:
        encodable = False
    else:
        encodable = True
    assert is_gsm7(text) is encodable


@given(gsm_texts)
def test_gsm7_bytes_match_the_gsm0338_codec(text: str) -> None:
    assert encode_part(text, GSM7) == text.encode("gsm03.38")
