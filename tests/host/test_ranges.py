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


# one-page and range changes, interleaved with reads, against a dict per page: the one-page
# changes wait as pending pages and are merged by a later read, range change or view
mixed_ops = st.lists(st.one_of(
    st.tuples(st.just("page"), st.integers(0, 80), st.just(1), st.sampled_from([0, 8, 8, 16])),
    st.tuples(st.just("range"), st.integers(0, 80), st.integers(1, 30), st.sampled_from([0, 8, 16])),
    st.tuples(st.just("get"), st.integers(0, 100), st.just(1), st.just(0)),
    st.tuples(st.just("has"), st.integers(0, 80), st.integers(1, 20), st.sampled_from([0, 8, 16])),
    st.tuples(st.just("ranges"), st.integers(0, 80), st.integers(1, 40), st.just(0)),
    st.tuples(st.just("len"), st.just(0), st.just(1), st.just(0))), max_size=60)


@pytest.mark.parametrize("chunk, pending", [(1024, 128), (2, 3), (1, 1), (3, 2)],
                         ids=["defaults", "chunk2-pending3", "chunk1-pending1", "chunk3-pending2"])
@given(seq=mixed_ops)
def test_single_pages_and_ranges_match_a_dict_per_page(chunk, pending, seq):
    saved = attributes.CHUNK, attributes.PENDING
    attributes.CHUNK, attributes.PENDING = chunk, pending
    try:
        store, ref = AttributeRanges(), {}
        for op, start, n, value in seq:
            end = start + n
            if op in ("page", "range"):
                store.set(start, end, value)
                for g in range(start, end):
                    if value:
                        ref[g] = value
                    else:
                        ref.pop(g, None)
            elif op == "get":
                assert store.get(start) == ref.get(start, 0)
            elif op == "has":
                assert store.has(start, end, value) == all(ref.get(g, 0) == value for g in range(start, end))
            elif op == "ranges":
                got = [(a, b, v) for a, b, v in store.ranges(start, end) for _ in range(1)]
                pages = {g: v for a, b, v in got for g in range(a, b)}
                assert pages == {g: ref[g] for g in range(start, end) if g in ref}
            else:
                assert len(store) == len(_runs(ref))
        assert [(int(a), int(b), int(v)) for a, b, v in zip(store.starts, store.ends, store.values)] == _runs(ref)
        assert all(store.get(g) == ref.get(g, 0) for g in range(0, 120))
    finally:
        attributes.CHUNK, attributes.PENDING = saved


def _runs(ref: dict) -> list:
    """The canonical runs of a dict per page: maximal ranges of equal non-zero values."""
    out = []
    for g in sorted(ref):
        if out and out[-1][1] == g and out[-1][2] == ref[g]:
            out[-1][1] = g + 1
        else:
            out.append([g, g + 1, ref[g]])
    return [tuple(r) for r in out]


def test_a_range_change_over_many_pending_pages_keeps_those_outside():
    saved, attributes.CHUNK = attributes.CHUNK, 4
    try:
        store = AttributeRanges()
        for g in range(0, 400, 2):
            store.set(g, g + 1, 8)
        store.set(101, 299, 16)
        assert store.get(100) == 8 and store.get(101) == 16 and store.get(298) == 16 and store.get(300) == 8
        assert store.get(299) == 0 and store.has(101, 299, 16) and not store.has(100, 299, 16)
        assert len(store) == 51 + 1 + 50                  # 0, 2, ..., 100; [101, 299); 300, ..., 398
    finally:
        attributes.CHUNK = saved


def test_a_copy_is_equal_and_independent():
    """Snapshots (copy.deepcopy, pickle) carry the pending pages and share nothing."""
    import copy
    import pickle
    store = AttributeRanges()
    store.set(0, 100, 8)
    store.set(50, 51, 0)                               # pending
    for twin in (copy.deepcopy(store), pickle.loads(pickle.dumps(store))):
        assert twin.get(50) == 0 and twin.get(49) == 8 and len(twin) == 2
        twin.set(10, 11, 16)
        assert twin.get(10) == 16 and store.get(10) == 8
