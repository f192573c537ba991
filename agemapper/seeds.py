"""Reproducible seeds derived from a base seed and entities.

Shared by the networks (replicate initialisation, batch order) and the synthetic cohort (its
subjects and images), so that neither has to import the other.
"""

from __future__ import annotations

import hashlib


def derive_seed(base: int, *parts) -> int:
    """A reproducible 31-bit seed from a base seed and entities (contrast, sex, replicate)."""
    text = "/".join(str(p) for p in (base, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF
