"""What a host does at boot for less: its random generator made on first use (the same draws),
the direct map's and the frame allocator's counts computed rather than counted, a one-page
allocation from the few MIXED regions directly (the same pages as the general path)."""
import numpy as np
import pytest

from kit.host import Host
from kit.host import memory as M
from kit.host.directmap import LEVELS, DirectMap
from kit.host.ledger import Ledger
from kit.host.memory import PhysicalMemory
from kit.units import GiB, PAGES_PER_2M


def test_the_host_generator_is_made_on_first_use_with_the_same_draws():
    h = Host(mem=4 * GiB, seed=7)
    assert h._rng._rng is None
    assert np.array_equal(h.rng.random(5), np.random.default_rng(7).random(5))
    assert h.rng is h.rng


def test_the_host_and_its_allocator_share_a_generator_without_a_reference_cycle():
    """A host is freed when its last reference goes, not at the next cyclic collection: the
    allocator's lazy generator does not point back at the host (a 64 TiB host's arrays are GBs)."""
    import gc
    import weakref
    gc.disable()
    try:
        h = Host(mem=4 * GiB, seed=3, placement="random")
        h.memory.alloc(9, "kernel", 4)
        assert h.memory._rng is h._rng
        gone = weakref.ref(h)
        del h
        assert gone() is None
    finally:
        gc.enable()


def test_random_placement_draws_as_with_a_generator_made_at_boot():
    a = Host(mem=4 * GiB, seed=3, placement="random")
    b = PhysicalMemory(a.nr_pages, rng=np.random.default_rng(3), placement="random")
    for _ in range(3):
        assert np.array_equal(a.memory.alloc(9, "kernel", 4), b.alloc(9, "kernel", 4))
    with pytest.raises(TypeError, match="rng"):
        PhysicalMemory(a.nr_pages, rng=3)


@pytest.mark.parametrize("regions", [1, 513, 1024, 1536 * 512 + 7])
def test_boot_counts_are_the_counted_ones(regions):
    for gb in (True, False):
        d = DirectMap(regions * PAGES_PER_2M, ledger=Ledger(), gbpages=gb)
        assert d._nregions == [int(n) for n in np.bincount(d.lvl, minlength=len(LEVELS))]
    m = PhysicalMemory(regions * PAGES_PER_2M, rng=np.random.default_rng(0))
    want = np.bincount(np.arange(m.nr_regions) // M._BLOCK, minlength=-(-m.nr_regions // M._BLOCK))
    assert m._free_in_block.dtype == np.int64 and np.array_equal(m._free_in_block, want)


def test_one_page_allocations_take_the_pages_the_general_path_takes(monkeypatch):
    def script(mem):
        got, rng = [], np.random.default_rng(5)
        live = []
        for step in range(400):
            if live and rng.random() < 0.4:
                mem.free(live.pop(int(rng.integers(len(live)))))
            elif rng.random() < 0.1:
                got.append(mem.alloc(9, "guest", 1).tolist())
            else:
                p = mem.alloc(0, "kernel", 1)
                live.append(int(p[0]))
                got.append(p.tolist())
        return got
    fast = script(PhysicalMemory(8 * PAGES_PER_2M * 64, rng=np.random.default_rng(0)))
    monkeypatch.setattr(M, "_FEW_MIXED", -1)              # the general path only
    assert script(PhysicalMemory(8 * PAGES_PER_2M * 64, rng=np.random.default_rng(0))) == fast
