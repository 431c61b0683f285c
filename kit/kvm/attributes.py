"""Old home of the range store (kept importable for one release; see CHANGELOG.md).

``AttributeRanges`` is :class:`kit.host.ranges.RangeStore`."""
from ..host.ranges import RangeStore as AttributeRanges  # noqa: F401
