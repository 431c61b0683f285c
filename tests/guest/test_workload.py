"""The simulation's lazy-accept workload is the guest's acceptance (kit.sim.trace -> Guest.accept):
one accept_memory call per 4 MiB chunk, and the cost events of those calls."""
from kit.guest import Guest
from kit.sim import trace as T
from kit.units import GiB, PAGE_SHIFT, PAGES_PER_2M


def test_lazy_accept_calls_the_guest_one_call_per_chunk(monkeypatch):
    calls = []
    real = Guest.accept

    def spy(self, gpa, size, **kw):
        calls.append((gpa, size, kw.get("step")))
        return real(self, gpa, size, **kw)
    monkeypatch.setattr(Guest, "accept", spy)
    host, kvm, gs = T.build(16 * GiB, 8, "split-on-demand", [(2, 1 * GiB)], 0)
    tr = T.lazy_accept(host, gs, touched=[8], batch_chunks=4)
    assert calls == [(T.GUEST_BASE_GPA, 4 * T.ACCEPT_CHUNK, T.ACCEPT_CHUNK),
                     (T.GUEST_BASE_GPA + 4 * T.ACCEPT_CHUNK, 4 * T.ACCEPT_CHUNK, T.ACCEPT_CHUNK)]
    g = gs[0].guest
    assert g.counts["accept_memory"] == 8 and g.unaccepted[:17].sum() == 0 and g.unaccepted[17:].all()
    t = tr.totals()
    units = 8 * T.ACCEPT_CHUNK // T.ACCEPT_UNIT + 1       # and the guard unit
    assert t["set_attributes"] == t["user_exit"] == 8     # one exit and one answer per call
    assert t["pvalidate"] == t["rmpupdate"] == t["npt_map"] == units
    assert t["vm_exit"] == 8 + units                      # the VMGEXITs, then one #NPF per unit
    assert [b.events["set_attributes"] for b in tr.batches] == [4, 4]
    assert [b.events["pvalidate"] for b in tr.batches] == [9, 8]
    gfn = T.GUEST_BASE_GPA >> PAGE_SHIFT
    assert g.validated.has(gfn, gfn + units * PAGES_PER_2M, 1)
