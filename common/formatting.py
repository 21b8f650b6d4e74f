"""Formatting shared by every stage's reports and messages."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """Bytes in decimal units (GB = 10**9 bytes, the unit table sizes are quoted in)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"
