"""One error type for everything a user can fix.

Every error busi-lite raises on purpose is a :class:`BusiError` (or a subclass):
it carries WHAT went wrong (naming the file or parameter) and the FIX, and prints
as ``what -> fix``. Library code names parameters (``lr``); the CLI maps them to
its options (``--lr``) through ``param``, so library messages never name flags.
"""

from __future__ import annotations


class BusiError(Exception):
    """what -> fix. ``param``: the library parameter at fault (the CLI adds its option name)."""

    def __init__(self, what: str, fix: str | None = None, param: str | None = None):
        self.what, self.fix, self.param = what, fix, param
        super().__init__(f"{what} -> {fix}" if fix else what)


class ConfigError(BusiError, ValueError):
    """A parameter value is invalid; ``param`` names it."""


MAX_PIXELS = 50_000_000  # larger images are refused (decompression bombs)


class ImageError(BusiError):
    """One image file cannot be used; ``what`` names the file, ``fix`` says what to do."""


class ImageTooLarge(ImageError):
    """An image over the pixel limit (refused before decoding)."""


class ModelError(BusiError):
    """A saved model is missing, damaged or does not fit: what -> fix."""
