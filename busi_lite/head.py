"""Moved: the heads live in busi_lite.heads (protocol + registry). Kept for old imports."""
from .heads import HEADS, Adam, MTLHead, PlainHead, evaluate, fit, make_head  # noqa: F401
