"""The attribute range store (kit/kvm/attributes.py) against a plain dict, by hypothesis."""
import hypothesis.strategies as st
from hypothesis import given

import pytest

import kit.host.ranges as attributes
from kit.host.ranges import RangeStore as AttributeRanges

ops = st.lists(st.tuples(st.integers(0, 60), st.integers(1, 20), st.sampled_from([0, 8, 8, 16])),
               max_size=25)


@pytest.mark.parametrize("chunk", [1024, 2], ids=["chunk1024", "chunk2"])
@given(seq=ops)
def test_matches_a_dict_per_gfn(chunk, seq):
    """With the real chunk size and with 2, so that splits and cross-chunk edges happen."""
    saved, attributes.CHUNK = attributes.CHUNK, chunk
    try:
        _check_against_dict(seq)
    finally:
        attributes.CHUNK = saved


def _check_against_dict(seq):
    store, ref = AttributeRanges(), {}
    for start, n, value in seq:
        store.set(start, start + n, value)
        for g in range(start, start + n):
            if value:
                ref[g] = value
            else:
                ref.pop(g, None)
    for g in range(0, 90):
        assert store.get(g) == ref.get(g, 0)
    for a in range(0, 80, 7):
        for b in range(a + 1, a + 15):
            for value in (0, 8, 16):
                assert store.has(a, b, value) == all(ref.get(g, 0) == value for g in range(a, b))
    # canonical: no zero values, sorted, non-overlapping, neighbours with equal values merged
    s, e, v = store.starts, store.ends, store.values
    assert (v != 0).all() and (s < e).all() and (s[1:] >= e[:-1]).all()
    assert not ((s[1:] == e[:-1]) & (v[1:] == v[:-1])).any()


def test_a_terabyte_is_one_entry():
    store = AttributeRanges()
    store.set(0, (1 << 40) >> 12, 8)
    assert len(store) == 1 and store.has(0, (1 << 40) >> 12, 8)
    store.set(5, 6, 0)
    assert len(store) == 2 and store.get(5) == 0 and store.get(6) == 8


def test_merge_across_a_chunk_boundary():
    """A set starting exactly at a chunk's first range must merge with an equal range that
    ends there in the previous chunk (the store stays canonical)."""
    saved, attributes.CHUNK = attributes.CHUNK, 2
    try:
        store = AttributeRanges()
        for g in range(0, 20, 2):                      # 8,16,8,16,...: adjacent, never equal
            store.set(g, g + 1, 8)
            store.set(g + 1, g + 2, 16)
        assert len(store._chunks) > 1
        first_of_second = int(store._chunks[1][0][0])
        store.set(first_of_second, first_of_second + 1, int(store._chunks[0][2][-1]))
        s, e, v = store.starts, store.ends, store.values
        assert not ((s[1:] == e[:-1]) & (v[1:] == v[:-1])).any()
        assert all(store.get(g) == (8 if g % 2 == 0 else 16) for g in range(20) if g != first_of_second)
    finally:
        attributes.CHUNK = saved
