"""Names and messages as people see them, in the table and in the HTML report."""

from __future__ import annotations

_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _is_control(ch: str) -> bool:
    return ch < " " or "\x7f" <= ch <= "\x9f"


def clean_text(text: str) -> str:
    """Text that is safe to encode as UTF-8 and to show on a terminal or a page.

    Lone surrogates (undecodable file-name bytes, via surrogateescape) become U+FFFD; control
    characters (a newline, or an escape sequence that would recolour a terminal, in a file name) are
    shown as escapes such as `\\n` and `\\x1b` rather than acted on or vanishing.
    """
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that no file-name byte produced
        text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    if any(_is_control(ch) for ch in text):
        text = "".join(_CONTROL_ESCAPES.get(ch, f"\\x{ord(ch):02x}") if _is_control(ch) else ch for ch in text)
    return text
