"""CSV cells a spreadsheet will not run: text starting with ``= + - @``, tab or carriage return
gets a leading apostrophe (OWASP's CSV-injection rule); numbers are left as they are."""

from __future__ import annotations

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """``value`` for a CSV cell: a text that a spreadsheet would read as a formula is prefixed with '."""
    if not isinstance(value, str) or not value.startswith(_TRIGGERS):
        return value
    try:
        float(value)
        return value                  # a number such as -0.5 stays a number
    except ValueError:
        return "'" + value
