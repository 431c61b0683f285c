import pytest

from kit.host.ledger import EVENTS, Ledger


def test_record_mark_since_rollback():
    L = Ledger()
    L.record("a", cpa_lock=2, split_2m=1)
    m = L.mark()
    L.record("b", cpa_lock=1, invlpg=0)
    assert L.since(m) == {"cpa_lock": 1} and L.totals["cpa_lock"] == 3
    L.rollback(m)
    assert L.totals["cpa_lock"] == 2 and L.rows == [("a", {"cpa_lock": 2, "split_2m": 1})]
    assert set(L.summary()) == set(EVENTS)
    with pytest.raises(ValueError, match="event: unknown cost event 'spin'"):
        L.record("c", spin=1)
