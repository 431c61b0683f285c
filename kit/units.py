"""Sizes, page levels and size parsing.

Page levels are the byte sizes of the x86-64 mappings (``PAGE_4K``, ``PAGE_2M``, ``PAGE_1G``);
the kernel names them ``PG_LEVEL_4K/2M/1G`` (arch/x86/include/asm/pgtable_types.h).
"""
from __future__ import annotations

import re

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

PAGE_4K = 4 * KiB
PAGE_2M = 2 * MiB
PAGE_1G = 1 * GiB

#: 4K pages per 2M region, 2M regions per 1G region (PTRS_PER_PTE / PTRS_PER_PMD).
PTRS_PER_TABLE = 512
#: log2 of the 4K page size (arch/x86/include/asm/page_types.h ``PAGE_SHIFT``).
PAGE_SHIFT = 12
PMD_SHIFT = 21
PUD_SHIFT = 30
#: order of a 2M folio (include/linux/pgtable.h ``PMD_ORDER``).
PMD_ORDER = PMD_SHIFT - PAGE_SHIFT
#: 4K pages in a 2M region and in a 1G region.
PAGES_PER_2M = PAGE_2M >> PAGE_SHIFT
PAGES_PER_1G = PAGE_1G >> PAGE_SHIFT
#: page levels by level code (0 = 4K, 1 = 2M, 2 = 1G: the direct map's ``LVL_*``).
LEVELS = (PAGE_4K, PAGE_2M, PAGE_1G)
LEVEL_NAMES = {PAGE_4K: "4K", PAGE_2M: "2M", PAGE_1G: "1G"}

_UNITS = {
    "": 1, "b": 1,
    "k": KiB, "kb": KiB, "kib": KiB,
    "m": MiB, "mb": MiB, "mib": MiB,
    "g": GiB, "gb": GiB, "gib": GiB,
    "t": TiB, "tb": TiB, "tib": TiB,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int, *, name: str = "size") -> int:
    """Parse ``"1.5TiB"``, ``"160GiB"``, ``"2M"``, ``"4096"`` or an int into bytes.

    Units are binary (``K``/``KB``/``KiB`` are all 1024, as in the kernel's ``memparse``).
    The result must be a whole number of bytes and not negative; anything else raises a
    ``ValueError`` naming ``name``.
    """
    if isinstance(text, bool):
        raise TypeError(f"{name}: expected a size such as '160GiB' or an int, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{name}: a size cannot be negative, got {text}")
        return text
    if not isinstance(text, str):
        raise TypeError(f"{name}: expected a size such as '160GiB' or an int, got {type(text).__name__}")
    m = _SIZE_RE.match(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(
            f"{name}: cannot parse {text!r} as a size; use a number with an optional unit "
            "B, K/KiB, M/MiB, G/GiB or T/TiB (e.g. '1.5TiB')")
    number, unit = m.group(1), _UNITS[m.group(2).lower()]
    if "." in number:
        whole, frac = number.split(".")
        # exact decimal arithmetic: 1.5TiB must be exactly 3 * 512 GiB
        scaled = int(whole or "0") * unit + (int(frac or "0") * unit) // (10 ** len(frac or "0"))
        if (int(frac or "0") * unit) % (10 ** len(frac or "0")):
            raise ValueError(f"{name}: {text!r} is not a whole number of bytes")
        return scaled
    return int(number) * unit


def format_size(nbytes: int) -> str:
    """Render bytes with the largest binary unit that divides them exactly ("1536GiB"), else
    with two decimals in the largest unit not above them."""
    units = ((TiB, "TiB"), (GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB"))
    for unit, suffix in units:
        if nbytes >= unit and nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    for unit, suffix in units:
        if nbytes >= unit:
            return f"{nbytes / unit:.2f}{suffix}"
    return f"{nbytes}B"


def check_level(level, *, name: str = "level", allowed=(PAGE_4K, PAGE_2M)) -> int:
    """Validate a page level; raise ``ValueError`` naming ``name`` and the allowed values."""
    if isinstance(level, bool) or not isinstance(level, int) or level not in allowed:
        names = ", ".join(f"PAGE_{LEVEL_NAMES[a]} ({a})" for a in allowed)
        raise ValueError(f"{name}: must be one of {names}, got {level!r}")
    return level
