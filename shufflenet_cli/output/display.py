"""Names and messages as people see them, in the table and in the HTML report."""

from __future__ import annotations

_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# Invisible characters that change how the text around them is shown: bidi controls (a RIGHT-TO-LEFT
# OVERRIDE makes "photo\u202egpj.exe" read as "photoexe.jpg") and the line and paragraph separators
# that some terminals and browsers break lines at.
_FORMAT_CONTROLS = frozenset("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _is_control(ch: str) -> bool:
    return ch < " " or "\x7f" <= ch <= "\x9f" or ch in _FORMAT_CONTROLS


def _escape(ch: str) -> str:
    return _CONTROL_ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ch <= "\xff" else f"\\u{ord(ch):04x}")


def clean_text(text: str) -> str:
    """Text that is safe to encode as UTF-8 and to show on a terminal or a page.

    Lone surrogates (undecodable file-name bytes, via surrogateescape) become U+FFFD; control
    characters (a newline, or an escape sequence that would recolour a terminal, in a file name) and
    bidi controls are shown as escapes such as `\\n`, `\\x1b` and `\\u202e` rather than acted on or vanishing.
    """
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that no file-name byte produced
        text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    if any(_is_control(ch) for ch in text):
        text = "".join(_escape(ch) if _is_control(ch) else ch for ch in text)
    return text
