"""GSM-7 / UCS-2 detection, splitting into SMS parts, and SMPP short_message encoding.

Pure functions, no I/O. `split_text` decides the coding and the parts of a message (each part
is billed and tracked on its own); `encode_part` gives the bytes of one part for submit_sm.
"""

from tikosms.text.codec import GSM7, UCS2, decode_part, encode_part
from tikosms.text.gsm import is_gsm7
from tikosms.text.split import SplitText, split_text

__all__ = [
    "GSM7",
    "UCS2",
    "SplitText",
    "decode_part",
    "encode_part",
    "is_gsm7",
    "split_text",
]
