"""Reading a text file whose encoding may not be the one asked for.

`gptcourse.data.load_text` turns a corpus file's bytes into text through `decode_text`: it
honours a byte-order mark, turns Windows and old Mac line ends into "\\n", and when the bytes do
not fit the encoding asked for, it says at which byte and which usual encodings read them (a
Korean Windows file is usually cp949). It warns when a file read in another encoding looks like
UTF-8, the commonest mix-up.
"""

from __future__ import annotations

import codecs
import unicodedata
import warnings
from pathlib import Path

from .validate import CourseWarning, InputError

# Encodings to suggest when a file is not UTF-8, most likely first (Korean Windows: cp949).
LIKELY_ENCODINGS = ["cp949", "euc-kr", "shift_jis", "gb18030", "big5", "cp1252"]


def decode_text(path: Path, data: bytes, encoding: str) -> str:
    """The text of a file's bytes `data` in `encoding`, with "\\n" line ends; an InputError that
    says what to do if it cannot be read that way. `path` is only named in messages."""
    codec = codec_name(encoding)
    mark = _byte_order_mark(data)
    if mark is not None and not codec.startswith(mark):
        # A byte-order mark says which encoding the file is in; another one would misread it.
        raise InputError(f"{path} starts with the byte-order mark of {mark.upper()}, so it is "
                         f"{mark.upper()} text, not {_label(codec, encoding)}: pass encoding='{mark}' "
                         f"(--encoding {mark}), or save it as UTF-8")
    # utf-8-sig also reads UTF-8 files that start with a byte-order mark (some editors add one).
    try:
        text = data.decode("utf-8-sig" if codec == "utf-8" else codec)
    except UnicodeDecodeError as exc:
        raise InputError(_decode_error(path, data, codec, exc, encoding)) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # as reading in text mode does
    if not text:
        raise InputError(f"{path} is empty: a corpus needs at least some text")
    if not codec.startswith("utf-8") and _has_multibyte_utf8(data):
        # Text in another encoding is almost never valid UTF-8 by chance (in cp949, most Hangul
        # starts with a byte UTF-8 never starts a character with); latin-1 reads any bytes.
        warnings.warn(f"{path} was read as {encoding}, but its bytes are valid UTF-8 with "
                      f"characters such as {_sample(data)}: it is probably UTF-8, which "
                      f"{encoding} reads as other characters. Leave out encoding= (--encoding) "
                      f"to read it as UTF-8, or ignore this if {encoding} is right.",
                      EncodingMismatchWarning, stacklevel=3)  # load_text's caller
    return text


class EncodingMismatchWarning(CourseWarning):
    """A text file was read in the encoding asked for, but its bytes suggest another one."""


# Byte-order marks, longest first: UTF-32's little-endian mark begins with UTF-16's.
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]


def _byte_order_mark(data: bytes) -> str | None:
    """The encoding whose byte-order mark `data` starts with ("utf-16", ...), or None."""
    return next((name for bom, name in _BOMS if data.startswith(bom)), None)


def _label(codec: str, asked: str) -> str:
    return "UTF-8" if codec.startswith("utf-8") else asked


def codec_name(encoding: str) -> str:
    """Python's own name for a text encoding ("UTF8" -> "utf-8"); an InputError if it has none."""
    problem = None
    if not isinstance(encoding, str):
        problem = "is not an encoding name"
    else:
        try:
            name = codecs.lookup(encoding).name
            "a".encode(name)  # rot13, base64, zlib...: codecs Python knows, but not text encodings
        except LookupError as exc:
            problem = ("is not an encoding Python knows" if "unknown" in str(exc)
                       else "is not a text encoding (it turns text into other text or bytes)")
        except UnicodeError:
            problem = "is not a text encoding"
    if problem:
        raise InputError(f"encoding {encoding!r} {problem}: use a name such as 'utf-8' or "
                         f"'cp949'") from None
    return name


def _has_multibyte_utf8(data: bytes) -> bool:
    """True if `data` is valid UTF-8 and holds characters of more than one byte."""
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _sample(data: bytes) -> str:
    """The first few different non-ASCII characters of UTF-8 `data`, for a message."""
    found = dict.fromkeys(c for c in data.decode("utf-8") if ord(c) > 127)
    return ", ".join(repr(c) for c in list(found)[:3])


def _plausible(data: bytes, encoding: str) -> bool:
    """True if `encoding` reads `data` as text: no error, the same bytes back, no control codes."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        return False
    if text.encode(encoding) != data:
        return False
    return not any(unicodedata.category(c) == "Cc" and c not in "\t\n\r\f\v" for c in text)


def _decode_error(path: Path, data: bytes, codec: str, exc: UnicodeDecodeError,
                  asked: str) -> str:
    """Say at which byte `data` stops being `codec`, and which encodings read it plausibly."""
    where = f" at byte offset {exc.start} (byte 0x{data[exc.start]:02x})"
    candidates = list(LIKELY_ENCODINGS) if codec == "utf-8" else ["utf-8", *LIKELY_ENCODINGS]
    if b"\x00" in data:  # text in one-byte encodings has no NUL bytes; UTF-16 is full of them
        # ASCII in UTF-16 is the character's byte and a NUL: NULs at odd offsets mean little-endian.
        odd = data[1::2].count(0) >= data[0::2].count(0)
        candidates = ["utf-16-le" if odd else "utf-16-be"] + candidates
    fits = [name for name in candidates if name != codec and _plausible(data, name)]
    if fits:
        korean = " (files from Korean Windows are often cp949)" if "cp949" in fits else ""
        hint = (f"It reads as text in {', '.join(fits)}{korean}. Pass the file's encoding, e.g. "
                f"load_text(path, encoding='{fits[0]}') or --encoding {fits[0]}, or save it as "
                f"UTF-8.")
    else:
        hint = (f"None of the usual encodings ({', '.join(LIKELY_ENCODINGS)}) reads it as text "
                f"either: find out the file's encoding (a text editor shows it) and pass it "
                f"with encoding= or --encoding, or save the file as UTF-8.")
    label = "UTF-8" if codec == "utf-8" else asked
    return f"{path} is not {label} text: decoding failed{where}. {hint}"
