"""Old name of :mod:`kit.host.ranges` (kept importable for one release; see CHANGELOG.md)."""
from .ranges import *  # noqa: F401,F403
from .ranges import PAGES_PER_1G, PAGES_PER_2M, LazyIndex, SlotPool, check_int, check_pfn_range, page_mask, pfn_runs, region_span  # noqa: F401
