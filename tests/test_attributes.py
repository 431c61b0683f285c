"""The attribute range store (kit/kvm/attributes.py) against a plain dict, by hypothesis."""
import hypothesis.strategies as st
from hypothesis import given

from kit.kvm.attributes import AttributeRanges

ops = st.lists(st.tuples(st.integers(0, 60), st.integers(1, 20), st.sampled_from([0, 8, 8, 16])),
               max_size=25)


@given(ops)
def test_matches_a_dict_per_gfn(seq):
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
