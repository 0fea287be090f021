"""Names every layer shares: the classes in their fixed order and the package version."""

from __future__ import annotations

VERSION = "0.1.0"  # also in pyproject.toml

CLASSES = ("normal", "benign", "malignant")
