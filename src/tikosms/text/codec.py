"""Bytes of an SMPP short_message for one part, and back (the SMSC simulator decodes)."""

from tikosms.text.gsm import decode_gsm7, encode_gsm7

# SMPP 3.4 data_coding values. 0 is "SMSC default alphabet", which our carriers take as GSM 03.38.
GSM7 = 0
UCS2 = 8  # ISO/IEC 10646; sent as UTF-16BE, so characters beyond the BMP are surrogate pairs


def encode_part(text: str, data_coding: int) -> bytes:
    """0: unpacked GSM 03.38 septets (escape + code for extensions); 8: UTF-16BE.

    ValueError when the text cannot be written in that coding (a non-GSM character for 0,
    a lone surrogate for 8) or the data_coding is neither.
    """
    if data_coding == GSM7:
        return encode_gsm7(text)
    if data_coding == UCS2:
        return text.encode("utf-16-be")
    raise ValueError(f"unsupported data_coding {data_coding}")


def decode_part(data: bytes, data_coding: int) -> str:
    """Inverse of encode_part; ValueError for data that encode_part could not have produced."""
    if data_coding == GSM7:
        return decode_gsm7(data)
    if data_coding == UCS2:
        return data.decode("utf-16-be")
    raise ValueError(f"unsupported data_coding {data_coding}")
